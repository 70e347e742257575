"""The ops/ material against a REAL Prometheus: Debian's `prometheus` scrapes a live `tailor serve` with the recording
rules and alerts loaded, while the test drives traffic. Then every recording rule has a series, no rule fails to
evaluate, and every dashboard panel query returns data (with the dashboard variables substituted as Grafana does).
The same holds in Redis mode: two `tailor serve` replicas and the `tailor learn` leader on a private redis-server,
all three scraped under job "tailor" (ops/README.md only documents scraping `tailor serve`; the rules and alerts
select job="tailor", so the learner, whose /metrics carries the learning series, joins that job)."""

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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from server.tools.launcher import LearnProcess, RedisProcess, ServeProcess, free_port
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
# Panel queries of the "Evidence" row that have no data (NaN: 0 / 0) unless a catalog sets a holdout or apprentice
# mode, which the test's catalog does not: its decisions are all served by the learned policy. The recording rules
# behind them are unit-tested with promtool (ops/prometheus/tests/evidence_test.yaml).
_NO_HOLDOUT = "no holdout in the test's catalog (policy.holdout_share 0): the lift is NaN"
_NO_APPRENTICE = "no decision point in apprentice mode: the agreement rate is 0 / 0"
EVIDENCE_NO_DATA: dict[str, str] = {
    'tailor:holdout_lift:mean1d{decision_point=~".*"}': _NO_HOLDOUT,
    'tailor:holdout_lift:mean1d{decision_point=~".*"} + tailor:holdout_lift:ci95_1d{decision_point=~".*"}': _NO_HOLDOUT,
    'tailor:holdout_lift:mean1d{decision_point=~".*"} - tailor:holdout_lift:ci95_1d{decision_point=~".*"}': _NO_HOLDOUT,
    (
        'sum by (decision_point) (rate(tailor_apprentice_decisions_total{agreed="true", instance=~".*", '
        'decision_point=~".*"}[1h])) / sum by (decision_point) (rate(tailor_apprentice_decisions_total'
        '{instance=~".*", decision_point=~".*"}[1h]))'
    ): _NO_APPRENTICE,
}
# Panel queries that cannot have data in a short test, with the reason. Otherwise every panel must show data.
NO_DATA_EXPECTED: dict[str, str] = dict(EVIDENCE_NO_DATA)
# The same for Redis mode (two replicas and `tailor learn`), keyed by panel query, with the reason. Nothing else:
# `tailor learn` times what it publishes as its snapshot duration.
NO_DATA_EXPECTED_REDIS: dict[str, str] = dict(EVIDENCE_NO_DATA)
TIMEOUT_SECONDS = 60.0
REDIS_TIMEOUT_SECONDS = 30.0


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

    def __init__(self, folder: Path, metrics_ports: list[int]) -> None:
        self.targets = [f"127.0.0.1:{port}" for port in metrics_ports]
        self.port = free_port()
        self.log_path = folder / "prometheus.log"
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
            "rule_files": [str(RECORDING_RULES), str(ALERTS)],
            "scrape_configs": [{"job_name": "tailor", "static_configs": [{"targets": self.targets}]}],
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
    """Decisions (served, replayed, deferred, failed), rewards (accepted, duplicate, unknown) and session events.
    Decisions go to `client`; rewards and session events to `rewards_client` (another replica), if given."""

    def __init__(self, client: TailorClient, rewards_client: TailorClient | None = None) -> None:
        self.client = client
        self.rewards_client = rewards_client if rewards_client is not None else client
        self.round = 0

    def step(self) -> None:
        self.round += 1
        for i in range(10):
            session = f"s{self.round}-{i}"
            decision = self.client.decide(session, DECISION_POINT, context={"device": "mobile" if i % 2 else "web"})
            if i < 6:
                reward_id = uuid.uuid4().hex
                self.rewards_client.report_rewards([(decision.event_id, float(i % 3 == 0), reward_id)])
                if i == 0:  # a retried reward
                    self.rewards_client.report_rewards([(decision.event_id, 1.0, reward_id)])
        event_id = f"replayed-{self.round}"
        self.client.decide("replay", DECISION_POINT, event_id=event_id)
        self.client.decide("replay", DECISION_POINT, event_id=event_id)  # answered from the decision log
        self.client.decide(f"deferred-{self.round}", DECISION_POINT, defer_activation=True)  # never activated
        self.rewards_client.report_rewards([(uuid.uuid4().hex, 1.0, uuid.uuid4().hex)])  # unknown event
        with pytest.raises(grpc.RpcError) as failed:
            self.client.decide("s", "no_such_decision_point")
        assert failed.value.code() == grpc.StatusCode.NOT_FOUND
        events = [
            pb.SessionEvent(session_id=f"s{self.round}-0", type=pb.EVENT_TYPE_PRODUCT_VIEW, product_id="p1", price=9.5),
            pb.SessionEvent(session_id=f"s{self.round}-0", type=pb.EVENT_TYPE_CLICK, product_id="p1"),
        ]
        self.rewards_client.track_events(events)


def missing(prometheus: Prometheus, no_data_expected: dict[str, str]) -> list[str]:
    """What the API does not show yet: targets down, recording rules without series, unhealthy rules, panels without
    data (except the queries in `no_data_expected`, which must exist on the dashboard)."""
    problems: list[str] = []
    up = {sample["metric"]["instance"] for sample in prometheus.query('up{job="tailor"} == 1')}
    if down := sorted(set(prometheus.targets) - up):
        problems.append(f"job=tailor targets not up: {down}")
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
    queries = panel_queries()
    if unknown := sorted(set(no_data_expected) - {expr for _, expr in queries}):
        problems.append(f"no-data exceptions that are not dashboard queries: {unknown}")
    for title, expr in queries:
        if expr not in no_data_expected and not has_data(prometheus.query(expr)):
            problems.append(f"panel {title!r}: no data for {expr}")
    return problems


def wait_until_complete(
    prometheus: Prometheus, step: Callable[[], None], no_data_expected: dict[str, str], timeout: float
) -> list[str]:
    """Run `step` (traffic), then ask Prometheus, until nothing is `missing`; what is still missing at `timeout`."""
    deadline = time.monotonic() + timeout
    problems = ["not checked yet"]
    while time.monotonic() < deadline:
        step()
        try:
            problems = missing(prometheus, no_data_expected)
        except (OSError, urllib.error.URLError) as error:
            problems = [f"Prometheus API: {error}"]
        if not problems:
            break
        time.sleep(1.0)
    return problems


def start_prometheus(tmp_path: Path, metrics_ports: list[int]) -> Iterator[Prometheus]:
    if not PROMETHEUS.exists():
        pytest.fail(
            f"{PROMETHEUS} is not installed: this test runs a real Prometheus. Run scripts/test (it installs "
            "Debian's prometheus package) or `apt-get install --no-install-recommends prometheus`."
        )
    folder = tmp_path / "prometheus"
    folder.mkdir()
    server = Prometheus(folder, metrics_ports)
    try:
        server.start()
        yield server
    finally:
        server.stop()


def write_catalogs(tmp_path: Path) -> Path:
    catalogs = tmp_path / "catalogs"
    catalogs.mkdir()
    write_catalog(catalogs, DECISION_POINT, LAYOUTS, reward_window_seconds=1)
    return catalogs


@pytest.fixture
def tailor_serve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ServeProcess]:
    catalogs = write_catalogs(tmp_path)
    monkeypatch.setenv("TAILOR_SNAPSHOT_INTERVAL_SECONDS", "1")  # snapshot panels get samples within the test
    args = ["--host", "127.0.0.1", "--metrics-host", "127.0.0.1", "--console-port", str(free_port())]
    with ServeProcess(catalogs, tmp_path / "data", args) as serve:
        yield serve


def open_console(serve: ServeProcess) -> None:
    """One page of the web console (loopback, no keys: protected mode lets this machine in), so that the
    dashboard's console panels have series."""
    port = serve.args[serve.args.index("--console-port") + 1]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as page:
        assert page.status == 200


@pytest.fixture
def prometheus(tmp_path: Path, tailor_serve: ServeProcess) -> Iterator[Prometheus]:
    yield from start_prometheus(tmp_path, [tailor_serve.metrics_port])


class RedisCluster:
    """Redis mode: a private redis-server, two `tailor serve` replicas and the `tailor learn` leader."""

    def __init__(self, redis: RedisProcess, replicas: list[ServeProcess], learner: LearnProcess) -> None:
        self.redis = redis
        self.replicas = replicas
        self.learner = learner

    @property
    def metrics_ports(self) -> list[int]:
        return [replica.metrics_port for replica in self.replicas] + [self.learner.metrics_port]

    def log_tails(self) -> str:
        tails = [f"--- replica {replica.target}:\n{replica.log_tail()}" for replica in self.replicas]
        learner_log = "\n".join(self.learner.log_path.read_text(errors="replace").splitlines()[-30:])
        return "\n".join([*tails, f"--- learner:\n{learner_log}"])


@pytest.fixture
def redis_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RedisCluster]:
    catalogs = write_catalogs(tmp_path)
    monkeypatch.setenv("TAILOR_SNAPSHOT_INTERVAL_SECONDS", "1")
    prefix = f"prom{uuid.uuid4().hex[:8]}"
    redis = RedisProcess()
    with contextlib.ExitStack() as stop:  # stops everything started, in reverse order, even if one stop fails
        stop.callback(redis.stop)
        redis.start()
        learner = LearnProcess(catalogs, redis.url, prefix, tmp_path / "learn.log")
        stop.callback(learner.stop)
        learner.start()
        replicas: list[ServeProcess] = []
        for i in range(2):
            replica = ServeProcess(
                catalogs, tmp_path / f"data-{i}", ["--redis-url", redis.url, "--redis-prefix", prefix,
                "--host", "127.0.0.1", "--metrics-host", "127.0.0.1", "--console-port", str(free_port())],
            )  # fmt: skip
            stop.callback(replica.stop)
            replicas.append(replica.start())
        yield RedisCluster(redis, replicas, learner)


@pytest.fixture
def redis_prometheus(tmp_path: Path, redis_cluster: RedisCluster) -> Iterator[Prometheus]:
    yield from start_prometheus(tmp_path, redis_cluster.metrics_ports)


def test_rules_and_dashboard_queries_have_data_in_a_real_prometheus(
    tailor_serve: ServeProcess, prometheus: Prometheus
) -> None:
    with TailorClient(tailor_serve.target) as client:
        traffic = Traffic(client)
        traffic.step()
        open_console(tailor_serve)
        assert tailor_serve.proc is not None
        tailor_serve.proc.send_signal(signal.SIGHUP)  # a catalog reload (result="ok")
        problems = wait_until_complete(prometheus, traffic.step, NO_DATA_EXPECTED, TIMEOUT_SECONDS)
    assert not problems, (
        f"after {TIMEOUT_SECONDS:.0f}s of traffic ({traffic.round} rounds):\n"
        + "\n".join(problems)
        + f"\n--- prometheus log:\n{prometheus.log_tail()}\n--- tailor log:\n{tailor_serve.log_tail()}"
    )
    assert tailor_serve.proc is not None and tailor_serve.proc.poll() is None, tailor_serve.log_tail()


def test_rules_and_dashboard_queries_have_data_in_redis_mode(
    redis_cluster: RedisCluster, redis_prometheus: Prometheus
) -> None:
    first, second = redis_cluster.replicas
    with TailorClient(first.target) as decisions, TailorClient(second.target) as rewards:
        traffic = Traffic(decisions, rewards)  # decided on one replica, rewarded through the other
        traffic.step()
        for replica in redis_cluster.replicas:
            open_console(replica)  # its overview reads the learner's series from Redis
        for replica in redis_cluster.replicas:
            assert replica.proc is not None
            replica.proc.send_signal(signal.SIGHUP)  # a catalog reload (result="ok")
        problems = wait_until_complete(redis_prometheus, traffic.step, NO_DATA_EXPECTED_REDIS, REDIS_TIMEOUT_SECONDS)
    assert not problems, (
        f"after {REDIS_TIMEOUT_SECONDS:.0f}s of traffic ({traffic.round} rounds):\n"
        + "\n".join(problems)
        + f"\n--- prometheus log:\n{redis_prometheus.log_tail()}\n{redis_cluster.log_tails()}"
    )
    for replica in redis_cluster.replicas:
        assert replica.proc is not None and replica.proc.poll() is None, replica.log_tail()
    learner = redis_cluster.learner
    assert learner.proc is not None and learner.proc.poll() is None, redis_cluster.log_tails()
