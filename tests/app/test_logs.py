"""`--log-format json`, on real processes: every line `tailor serve` and `tailor learn` write (stdout and
stderr) is one JSON object with `time`, `level`, `logger` and `message`; the significant events carry their
`event` name; no line holds an API key, a session id or what a shopper did."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from server.api import new_key
from server.tools.launcher import LearnProcess, free_port
from server.tools.launcher import ServeProcess as Launched
from tailor import TailorClient
from tailor.v1 import decision_service_pb2 as pb
from tailor.v1 import decision_service_pb2_grpc as pb_grpc

from ..conftest import LAYOUTS, write_catalog
from ..redis_server import RedisServer

SESSION = "shopper-5b1e77c3"  # must never reach a log line
PRODUCT = "sku-private-9921"
CONTEXT_VALUE = "ctx-value-0c4f"


class JsonServe(Launched):
    """`tailor serve --log-format json ...` with stdout and stderr kept apart, to check each."""

    def __init__(self, catalogs: Path, data_dir: Path, *extra: str) -> None:
        super().__init__(catalogs, data_dir, ["--log-format", "json", *extra], log=data_dir.parent / "stderr.log")
        self.stdout_path = data_dir.parent / "stdout.log"

    def start(self, timeout: float = 30.0) -> JsonServe:
        with self.stdout_path.open("wb") as out, self.log_path.open("wb") as err:
            self.proc = subprocess.Popen(self.args, stdout=out, stderr=err)
        return self.wait_serving(timeout)

    def records(self) -> list[dict[str, Any]]:
        return parse_lines(self.stdout_path.read_text() + self.log_path.read_text())

    def wait_event(self, event: str, after: int = 0, timeout: float = 10.0) -> dict[str, Any]:
        """The first record of `event` among the records after the first `after`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [r for r in self.records()[after:] if r.get("event") == event]
            if found:
                return found[0]
            time.sleep(0.05)
        raise AssertionError(f"no {event!r} record within {timeout:.0f}s:\n{self.log_tail()}")


def parse_lines(text: str) -> list[dict[str, Any]]:
    """Every line as a JSON object with the four fields every record has; fails on any other line."""
    records = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            pytest.fail(f"not a JSON line: {line!r}")
        assert isinstance(record, dict), line
        assert {"time", "level", "logger", "message"} <= record.keys(), line
        assert record["time"].endswith("Z") and "T" in record["time"], line
        records.append(record)
    return records


def assert_nothing_private(text: str, *secrets: str) -> None:
    for secret in (SESSION, PRODUCT, CONTEXT_VALUE, *secrets):
        assert secret not in text, f"{secret!r} reached the log"


@pytest.fixture
def catalogs(tmp_path: Path) -> Path:
    folder = tmp_path / "catalogs"
    folder.mkdir()
    write_catalog(folder, "home_layout", LAYOUTS)
    return folder


def held_stream(stub: pb_grpc.DecisionServiceStub, key: str, release: threading.Event) -> Any:
    """A TrackEvents stream that holds its in-flight slot until `release` is set."""

    def requests() -> Iterator[pb.TrackEventsRequest]:
        yield pb.TrackEventsRequest(events=[pb.SessionEvent(session_id=SESSION, type=pb.EVENT_TYPE_PAGE_VIEW)])
        release.wait(20)

    return stub.TrackEvents.future(requests(), metadata=(("authorization", f"Bearer {key}"),), timeout=20)


def test_serve_writes_only_json_lines_with_events_and_no_secrets(catalogs: Path, tmp_path: Path) -> None:
    key, wrong_key = new_key(), new_key()
    keys = tmp_path / "keys.yaml"
    entry = {"name": "storefront", "sha256": hashlib.sha256(key.encode()).hexdigest(), "roles": ["decide"]}
    keys.write_text(yaml.safe_dump({"keys": [entry]}))
    serve = JsonServe(catalogs, tmp_path / "data", "--api-keys", str(keys), "--max-in-flight", "1").start()
    try:
        with TailorClient(serve.target, api_key=key) as client:
            client.track_events(
                [pb.SessionEvent(session_id=SESSION, type=pb.EVENT_TYPE_PRODUCT_VIEW, product_id=PRODUCT, price=9.5)]
            )
            for _ in range(3):
                d = client.decide(SESSION, "home_layout", context={"device": CONTEXT_VALUE})
                client.report_rewards([(d.event_id, 1.0, "")])  # learned at once: the stop snapshots it

            with TailorClient(serve.target, api_key=wrong_key) as stranger, pytest.raises(grpc.RpcError) as refused:
                stranger.decide(SESSION, "home_layout")
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert serve.wait_event("call_rejected")["reason"] == "unknown_key"

            release = threading.Event()  # one call in flight (--max-in-flight 1): the next is shed
            with grpc.insecure_channel(serve.target) as channel:
                held = held_stream(pb_grpc.DecisionServiceStub(channel), key, release)
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    try:
                        client.decide(SESSION, "home_layout")
                    except grpc.RpcError as err:
                        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                        break
                    time.sleep(0.02)
                release.set()
                assert held.result(timeout=10).accepted == 1
            assert serve.wait_event("overloaded")["reason"] == "overload"

        assert serve.proc is not None
        seen = len(serve.records())
        bad = write_catalog(catalogs, "broken", {"a": {}}, reward_window_seconds=-1)
        serve.proc.send_signal(signal.SIGHUP)
        failed = serve.wait_event("catalog_reload_failed", after=seen)
        assert failed["level"] == "ERROR" and any("broken" in p for p in failed["problems"])
        bad.unlink()
        write_catalog(catalogs, "cart_offer", {"none": {}, "ten_off": {"pct": 10}})
        seen = len(serve.records())
        serve.proc.send_signal(signal.SIGHUP)
        assert serve.wait_event("catalogs_reloaded", after=seen)["decision_points"] == ["cart_offer", "home_layout"]
        reloaded = serve.wait_event("credentials_reloaded", after=seen)
        assert (reloaded["what"], reloaded["keys"]) == ("keys", 1)
    finally:
        code = serve.stop()
    assert code == 0

    records = serve.records()  # every line of stdout and stderr parses, or this fails
    by_event = {r["event"]: r for r in records if "event" in r}
    for event in ("server_started", "call_rejected", "overloaded", "catalog_reload_failed", "catalogs_reloaded"):
        assert event in by_event, event
    for event in ("credentials_reloaded", "shutdown", "snapshot_written", "stopped"):
        assert event in by_event, event
    assert by_event["server_started"]["port"] == serve.port
    assert by_event["server_started"]["api_keys"] == 1
    snapshot = by_event["snapshot_written"]
    assert snapshot["decision_point"] == "home_layout" and snapshot["seq"] == 1
    assert by_event["stopped"]["snapshots"] >= 1
    assert all(r["event"] == r["event"].lower() for r in records if "event" in r)
    assert_nothing_private(serve.stdout_path.read_text() + serve.log_path.read_text(), key, wrong_key)


def test_fail_open_and_a_traceback_are_json_too(catalogs: Path, tmp_path: Path) -> None:
    """Redis mode with nobody at the address: start-up warns with a traceback (one field of one line) and
    Decide answers without shared state, logged as fail_open."""
    nobody = f"redis://127.0.0.1:{free_port()}/0"
    serve = JsonServe(catalogs, tmp_path / "data", "--redis-url", nobody).start()
    try:
        with TailorClient(serve.target) as client:
            client.decide(SESSION, "home_layout", context={"device": CONTEXT_VALUE})
        read = serve.wait_event("fail_open")
        assert (read["step"], read["decision_point"], read["level"]) == ("read", "home_layout", "WARNING")
        serve.wait_event("fail_open", after=serve.records().index(read) + 1)  # the write fails open too
    finally:
        assert serve.stop() == 0
    unreachable = [r for r in serve.records() if r.get("event") == "redis_unavailable"]
    assert unreachable and "Traceback (most recent call last)" in unreachable[0]["exception"]
    assert_nothing_private(serve.stdout_path.read_text() + serve.log_path.read_text())


def test_learn_logs_json_from_the_environment(catalogs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAILOR_LOG_FORMAT", "json")  # the child inherits it: the variable, not the flag
    redis = RedisServer().start()
    learner = LearnProcess(catalogs, redis.url, "logs", tmp_path / "learn.log")
    try:
        learner.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and '"leader_acquired"' not in learner.log_path.read_text():
            time.sleep(0.05)
        assert learner.stop() == 0
    finally:
        if learner.proc is not None and learner.proc.poll() is None:
            learner.kill()
        redis.stop()
    text = learner.log_path.read_text()
    events = [r.get("event") for r in parse_lines(text)]
    for event in ("learner_started", "leader_acquired", "models_loaded", "leader_released", "stopped"):
        assert event in events, f"{event} missing from {events}"
    assert redis.url not in text


def test_a_start_that_fails_says_why_in_json(catalogs: Path, tmp_path: Path) -> None:
    args = [sys.executable, "-m", "server", "serve", "--log-format", "json", "--catalogs", str(catalogs)]
    done = subprocess.run(
        [*args, "--port", "-1", "--data-dir", str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    [record] = parse_lines(done.stdout + done.stderr)
    assert (record["event"], record["level"]) == ("start_failed", "ERROR")
    assert record["problems"] == ["configuration: port: Input should be greater than or equal to 0"]
