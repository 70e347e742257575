"""The ops/ material against a REAL Prometheus: Debian's `prometheus` scrapes a live `tailor serve` with the recording
rules and alerts loaded, while the test drives traffic. Then every recording rule has a series, no rule fails to
evaluate, and every dashboard panel query returns data (with the dashboard variables substituted as Grafana does)."""

from __future__ import annotations

import contextlib
import json
import math
import re
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from server.tools.launcher import ServeProcess, free_port
from tailor import TailorClient
from tailor.v1 import decision_service_pb2 as pb

from ..conftest import LAYOUTS, write_catalog

OPS = Path(__file__).resolve().parents[2] / "ops"
RECORDING_RULES = OPS / "prometheus" / "recording_rules.yaml"
ALERTS = OPS / "prometheus" / "alerts.yaml"
DASHBOARD = OPS / "grafana" / "tailor-dashboard.json"
PROMETHEUS = Path("/usr/bin/prometheus")

DECISION_POINT = "home_layout"
# Grafana's variables as the dashboard uses them: `$__rate_interval` becomes a window covering the test's samples
# (1 s scrapes), `$instance` and `$decision_point` are multi-value with allValue ".*" inside `=~` matchers.
VARIABLES = {"$__rate_interval": "1m", "$instance": ".*", "$decision_point": ".*"}
# Panel queries that cannot have data in a short test, with the reason. Empty: every panel must show data.
NO_DATA_EXPECTED: dict[str, str] = {}
TIMEOUT_SECONDS = 60.0


def load_yaml(path: Path) -> Any:
    with path.open() as f:
        return yaml.safe_load(f)


def recorded_names() -> list[str]:
    return [rule["record"] for group in load_yaml(RECORDING_RULES)["groups"] for rule in group["rules"]]


def panel_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL with the dashboard variables substituted) for every panel target."""

    def panels(container: dict[str, Any]) -> Iterator[dict[str, Any]]:
        for panel in container.get("panels", []):
            yield panel
            yield from panels(panel)

    found: list[tuple[str, str]] = []
    for panel in panels(json.loads(DASHBOARD.read_text())):
        for target in panel.get("targets", []):
            expr = str(target["expr"])
            for variable, value in sorted(VARIABLES.items(), key=lambda item: -len(item[0])):
                expr = expr.replace(variable, value)
            leftover = re.findall(r"\$\{?\w+\}?", expr)
            assert not leftover, f"panel {panel['title']!r} uses variables the test does not substitute: {leftover}"
            found.append((str(panel["title"]), expr))
    return found


class Prometheus:
    """`prometheus` on a free loopback port with its own storage, terminated by pid."""

    def __init__(self, folder: Path, metrics_port: int) -> None:
        self.port = free_port()
        self.log_path = folder / "prometheus.log"
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
            "rule_files": [str(RECORDING_RULES), str(ALERTS)],
            "scrape_configs": [{"job_name": "tailor", "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}]}],
        }
        self.config_path = folder / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.args = [
            str(PROMETHEUS), f"--config.file={self.config_path}", f"--storage.tsdb.path={folder / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn",
        ]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited {self.proc.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(OSError), urllib.request.urlopen(self.url("/-/ready"), timeout=1) as reply:
                if reply.status == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"prometheus not ready within {timeout:.0f}s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def api(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(self.url(f"/api/v1/{path}{query}"), timeout=5) as reply:
            body = json.loads(reply.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", (expr, data)
        result: list[dict[str, Any]] = data["result"]
        return result

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def has_data(result: list[dict[str, Any]]) -> bool:
    """At least one series with a number (a 0/0 NaN everywhere shows nothing on a panel)."""
    return any(not math.isnan(float(sample["value"][1])) for sample in result)


class Traffic:
    """Decisions (served, replayed, deferred, failed), rewards (accepted, duplicate, unknown) and session events."""

    def __init__(self, client: TailorClient) -> None:
        self.client = client
        self.round = 0

    def step(self) -> None:
        self.round += 1
        for i in range(10):
            session = f"s{self.round}-{i}"
            decision = self.client.decide(session, DECISION_POINT, context={"device": "mobile" if i % 2 else "web"})
            if i < 6:
                reward_id = uuid.uuid4().hex
                self.client.report_rewards([(decision.event_id, float(i % 3 == 0), reward_id)])
                if i == 0:  # a retried reward
                    self.client.report_rewards([(decision.event_id, 1.0, reward_id)])
        event_id = f"replayed-{self.round}"
        self.client.decide("replay", DECISION_POINT, event_id=event_id)
        self.client.decide("replay", DECISION_POINT, event_id=event_id)  # answered from the decision log
        self.client.decide(f"deferred-{self.round}", DECISION_POINT, defer_activation=True)  # never activated
        self.client.report_rewards([(uuid.uuid4().hex, 1.0, uuid.uuid4().hex)])  # unknown event
        with pytest.raises(grpc.RpcError) as failed:
            self.client.decide("s", "no_such_decision_point")
        assert failed.value.code() == grpc.StatusCode.NOT_FOUND
        events = [
            pb.SessionEvent(session_id=f"s{self.round}-0", type=pb.EVENT_TYPE_PRODUCT_VIEW, product_id="p1", price=9.5),
            pb.SessionEvent(session_id=f"s{self.round}-0", type=pb.EVENT_TYPE_CLICK, product_id="p1"),
        ]
        self.client.track_events(events)


def missing(prometheus: Prometheus) -> list[str]:
    """What the API does not show yet: recording rules without series, unhealthy rules, panels without data."""
    problems: list[str] = []
    if not has_data(prometheus.query('up{job="tailor"} == 1')):
        problems.append("target job=tailor is not up")
    for name in recorded_names():
        if not prometheus.query(name):
            problems.append(f"recording rule {name}: no series")
    loaded = 0
    for group in prometheus.api("rules")["groups"]:
        for rule in group["rules"]:
            loaded += 1
            if rule["health"] != "ok" or rule.get("lastError"):
                problems.append(f"rule {rule['name']}: health {rule['health']!r}, lastError {rule.get('lastError')!r}")
    expected = sum(len(group["rules"]) for path in (RECORDING_RULES, ALERTS) for group in load_yaml(path)["groups"])
    if loaded != expected:
        problems.append(f"{loaded} rules loaded, the rule files have {expected}")
    for title, expr in panel_queries():
        if expr not in NO_DATA_EXPECTED and not has_data(prometheus.query(expr)):
            problems.append(f"panel {title!r}: no data for {expr}")
    return problems


@pytest.fixture
def tailor_serve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ServeProcess]:
    catalogs = tmp_path / "catalogs"
    catalogs.mkdir()
    write_catalog(catalogs, DECISION_POINT, LAYOUTS, reward_window_seconds=1)
    monkeypatch.setenv("TAILOR_SNAPSHOT_INTERVAL_SECONDS", "1")  # snapshot panels get samples within the test
    with ServeProcess(catalogs, tmp_path / "data", ["--host", "127.0.0.1", "--metrics-host", "127.0.0.1"]) as serve:
        yield serve


@pytest.fixture
def prometheus(tmp_path: Path, tailor_serve: ServeProcess) -> Iterator[Prometheus]:
    if not PROMETHEUS.exists():
        pytest.fail(
            f"{PROMETHEUS} is not installed: this test runs a real Prometheus. Run scripts/test (it installs "
            "Debian's prometheus package) or `apt-get install --no-install-recommends prometheus`."
        )
    folder = tmp_path / "prometheus"
    folder.mkdir()
    server = Prometheus(folder, tailor_serve.metrics_port)
    try:
        server.start()
        yield server
    finally:
        server.stop()


def test_rules_and_dashboard_queries_have_data_in_a_real_prometheus(
    tailor_serve: ServeProcess, prometheus: Prometheus
) -> None:
    with TailorClient(tailor_serve.target) as client:
        traffic = Traffic(client)
        deadline = time.monotonic() + TIMEOUT_SECONDS
        reloaded = False
        problems = ["not checked yet"]
        while time.monotonic() < deadline:
            traffic.step()
            if not reloaded:
                assert tailor_serve.proc is not None
                tailor_serve.proc.send_signal(signal.SIGHUP)  # a catalog reload (result="ok")
                reloaded = True
            try:
                problems = missing(prometheus)
            except (OSError, urllib.error.URLError) as error:
                problems = [f"Prometheus API: {error}"]
            if not problems:
                break
            time.sleep(1.0)
    assert not problems, (
        f"after {TIMEOUT_SECONDS:.0f}s of traffic ({traffic.round} rounds):\n"
        + "\n".join(problems)
        + f"\n--- prometheus log:\n{prometheus.log_tail()}\n--- tailor log:\n{tailor_serve.log_tail()}"
    )
    assert tailor_serve.proc is not None and tailor_serve.proc.poll() is None, tailor_serve.log_tail()
