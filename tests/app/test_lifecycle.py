"""`tailor serve` as a process: health, reflection, metrics, SIGTERM, snapshots, restarts, SIGHUP reloads."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tailor.v1 import decision_service_pb2 as pb

from ..conftest import LAYOUTS, ServeProcess, write_catalog

SERVICE = "tailor.v1.DecisionService"


def pmf(proc: ServeProcess, context: dict[str, str | float]) -> dict[str, float]:
    d = proc.client.decide("probe", "home_layout", context=context)
    return {x.action_id: x.probability for x in d.ranking}


def test_serve_health_reflection_metrics_and_graceful_stop(catalog_dir: Path, tmp_path: Path) -> None:
    proc = ServeProcess(catalog_dir, tmp_path / "data").wait_serving()
    try:
        health = health_pb2_grpc.HealthStub(proc.channel)
        for service in ("", SERVICE):
            status = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status
            assert status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(proc.channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        answer = next(iter(reflection.ServerReflectionInfo(iter([request]), timeout=5)))
        assert SERVICE in [s.name for s in answer.list_services_response.service]
        d = proc.client.decide("s1", "home_layout")
        proc.client.report_rewards([(d.event_id, 1.0, "r1")])
        with urllib.request.urlopen(f"http://127.0.0.1:{proc.metrics_port}/metrics", timeout=5) as r:
            text = r.read().decode()
        for name in (
            "tailor_decisions_total",
            "tailor_decide_latency_seconds_bucket",
            "tailor_rewards_total",
            "tailor_learned_examples_total",
            "tailor_model_version",
            "tailor_model_age_seconds",
            "tailor_join_backlog_decisions",
        ):
            assert name in text, name
        assert "s1" not in text and d.event_id not in text
    finally:
        code = proc.terminate()
    assert code == 0
    assert "stopped:" in proc.log.read_text()
    assert list((tmp_path / "data" / "models" / "home_layout").glob("*/*.vw"))


def test_restart_resumes_the_model_and_the_pending_decisions(catalog_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    proc = ServeProcess(catalog_dir, data).wait_serving()
    for i in range(40):
        d = proc.client.decide(f"s{i}", "home_layout", context={"segment": "bargain"})
        proc.client.report_rewards([(d.event_id, 1.0 if d.action_id == "grid" else 0.0, "")])
    pending = proc.client.decide("later", "home_layout", event_id="pending-1")
    version = pending.model_version
    learned_pmf = pmf(proc, {"segment": "bargain"})
    assert proc.terminate() == 0

    proc = ServeProcess(catalog_dir, data).wait_serving()
    try:
        assert pmf(proc, {"segment": "bargain"}) == learned_pmf  # learning survived the restart
        replay = proc.client.decide("later", "home_layout", event_id="pending-1")
        assert replay == pending  # the decision log survived too
        fresh = proc.client.decide("x", "home_layout")
        assert fresh.model_version != version  # the shutdown snapshot is a new version
        assert fresh.model_version.split(".")[0] == version.split(".")[0]  # of the same model
        result = proc.client.report_rewards([(pending.event_id, 1.0, "after-restart")])
        assert result[0].status == pb.REWARD_STATUS_ACCEPTED
    finally:
        assert proc.terminate() == 0


def test_kill_9_loses_only_what_was_not_snapshotted(catalog_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    proc = ServeProcess(catalog_dir, data).wait_serving()
    d = proc.client.decide("s", "home_layout", event_id="before-graceful")
    assert proc.terminate() == 0
    proc = ServeProcess(catalog_dir, data).wait_serving()
    proc.client.decide("s", "home_layout", event_id="lost-on-kill")
    proc.kill()
    proc = ServeProcess(catalog_dir, data).wait_serving()
    try:
        results = proc.client.report_rewards([("lost-on-kill", 1.0, ""), (d.event_id, 1.0, "")])
        # the restored file was consumed at the second start, so nothing is replayed twice
        assert [r.status for r in results] == [pb.REWARD_STATUS_UNKNOWN_EVENT, pb.REWARD_STATUS_UNKNOWN_EVENT]
    finally:
        assert proc.terminate() == 0


def test_sighup_reloads_catalogs_and_keeps_the_old_ones_when_invalid(catalog_dir: Path, tmp_path: Path) -> None:
    proc = ServeProcess(catalog_dir, tmp_path / "data").wait_serving()
    try:
        write_catalog(catalog_dir, "home_layout", {**LAYOUTS, "video": {"style": "video"}})
        write_catalog(catalog_dir, "cart_offer", {"none": {}, "pct10": {"discount": 0.1}})
        proc.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if len(proc.client.decide("s", "home_layout").ranking) == 4:
                    break
            except grpc.RpcError:
                pass
            time.sleep(0.1)
        assert {x.action_id for x in proc.client.decide("s", "home_layout").ranking} == {*LAYOUTS, "video"}
        assert proc.client.decide("s", "cart_offer").action_id in {"none", "pct10"}

        (catalog_dir / "broken.yaml").write_text("decision_point: Not Valid\n")
        proc.proc.send_signal(signal.SIGHUP)
        time.sleep(1.0)
        assert proc.proc.poll() is None
        assert len(proc.client.decide("s", "home_layout").ranking) == 4  # still serving the last good catalogs
        assert "catalog reload failed" in proc.log.read_text()
    finally:
        assert proc.terminate() == 0


def test_environment_variables_configure_serve(catalog_dir: Path, tmp_path: Path) -> None:
    proc = ServeProcess(catalog_dir, tmp_path / "data")
    proc.kill()
    port = proc.port
    env = {**os.environ, "TAILOR_PORT": str(port), "TAILOR_CATALOGS": str(catalog_dir), "TAILOR_METRICS_PORT": "0"}
    env["TAILOR_DATA_DIR"] = str(tmp_path / "env-data")
    child = subprocess.Popen([sys.executable, "-m", "server", "serve"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        grpc.channel_ready_future(channel).result(timeout=30)
        health = health_pb2_grpc.HealthStub(channel)
        deadline = time.monotonic() + 30
        while health.Check(health_pb2.HealthCheckRequest(), timeout=5).status != health_pb2.HealthCheckResponse.SERVING:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        channel.close()
    finally:
        child.terminate()
        assert child.wait(30) == 0
    assert (tmp_path / "env-data").is_dir()


def test_serve_refuses_bad_startup_input_with_a_clear_message(tmp_path: Path, catalog_dir: Path) -> None:
    taken = socket.socket()
    taken.bind(("0.0.0.0", 0))
    taken.listen()
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.yaml").write_text("decision_point: Bad Name\nactions: []\n")
    cases = [
        (["--catalogs", str(bad)], "x.yaml"),
        (["--catalogs", str(tmp_path / "missing")], "not a directory"),
        (["--catalogs", str(catalog_dir), "--port", "70000"], "port"),
        (["--catalogs", str(catalog_dir), "--redis-url", "http://127.0.0.1:1"], "redis_url"),
        (["--catalogs", str(catalog_dir), "--port", "0", "--metrics-port", str(taken.getsockname()[1])], "in use"),
        (["--catalogs", str(catalog_dir), "--port", str(taken.getsockname()[1]), "--metrics-port", "0"], "in use"),
    ]
    for args, expected in cases:
        run = subprocess.run(
            [sys.executable, "-m", "server", "serve", "--data-dir", str(tmp_path / "d"), *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode == 2, (args, run.stderr)
        assert expected in run.stderr, (args, run.stderr)
        assert "Traceback" not in run.stderr
    taken.close()
