"""Apprentice mode and holdout: what is served, what the response and the decision log say, what is learned.

Apprentice mode serves the baseline action while the model learns from it; the response carries the model's
own choice, and the agreement rate (model's choice == baseline) rises as it learns. With apprentice_exploration
the served action is drawn from the mixture, and `probability` is that mixture's. Holdout sessions (sticky) get
the baseline with probability 1, are never learned, and the per-arm counters give the lift with its interval."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from google.protobuf import json_format, struct_pb2

from policies import difference_interval, in_holdout
from tailor.v1 import admin_service_pb2 as apb
from tailor.v1 import admin_service_pb2_grpc as apb_grpc
from tailor.v1 import decision_service_pb2 as pb

from ..conftest import RunningServer, write_catalog

ACTIONS: dict[str, dict[str, Any]] = {"a": {"style": "grid"}, "b": {"style": "carousel"}, "c": {"style": "editorial"}}


def lines(data: Path, tmp_path: Path) -> list[dict[str, Any]]:
    out = tmp_path / "export.dsjson"
    command = [sys.executable, "-m", "server", "export-logs", "--out", str(out), "--data-dir", str(data)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_apprentice_serves_the_baseline_and_the_model_learns_to_agree(
    start_server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    catalogs = tmp_path / "catalogs"
    catalogs.mkdir()
    for name in ("home_layout", "control"):  # control: the same, never rewarded (nothing learned in the test)
        write_catalog(catalogs, name, ACTIONS, mode="apprentice", baseline_action="b", reward_window_seconds=30)
    server = start_server(catalogs)
    control = [server.client.decide(f"c{i}", "control").model_action_id == "b" for i in range(300)]
    agreed: list[bool] = []
    for i in range(300):
        d = server.client.decide(f"s{i}", "home_layout", context={"device": "mobile" if i % 2 else "desktop"})
        assert d.arm == pb.DECISION_ARM_APPRENTICE and d.action_id == "b" and d.probability == 1.0
        assert [(r.action_id, r.probability) for r in d.ranking] == [("b", 1.0), ("a", 0.0), ("c", 0.0)]
        assert d.model_action_id in ACTIONS and 0.0 < d.model_probability <= 1.0
        agreed.append(d.model_action_id == "b")
        server.client.report_rewards([(d.event_id, 1.0, f"r{i}")])  # the baseline earns; the model learns it
    untrained, late = sum(control) / 300, sum(agreed[-100:]) / 100
    assert 0.2 < untrained < 0.5 and late > 0.8, (untrained, late)  # against an untrained model, same run
    counted = {
        v: server.metric("tailor_apprentice_decisions_total", {"decision_point": "home_layout", "agreed": v})
        for v in ("true", "false")
    }
    assert counted == {"true": sum(agreed), "false": 300 - sum(agreed)}
    learned = ("tailor_learned_examples_total", {"decision_point": "home_layout", "source": "reward"})
    assert server.wait_for(lambda: server.metric(*learned) == 300)
    server.stop()
    logged = lines(tmp_path / "data", tmp_path)
    assert len(logged) == 300 and all(doc["_tailor"]["arm"] == "apprentice" for doc in logged)
    assert [doc["_tailor"]["model_action"] == "b" for doc in logged] == agreed
    assert all(doc["_label_probability"] == 1.0 and "_skipLearn" not in doc for doc in logged)
    report = tmp_path / "report"
    command = [sys.executable, "-m", "server", "evaluate", str(tmp_path / "export.dsjson"), "--out", str(report)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    reports = {p["decision_point"]: p for p in json.loads((report / "report.json").read_text())["decision_points"]}
    assert abs(reports["home_layout"]["arms"]["agreement"]["value"] - sum(agreed) / 300) < 1e-9


def test_apprentice_exploration_serves_the_mixture_with_its_probability(
    start_server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    catalogs = tmp_path / "catalogs"
    catalogs.mkdir()
    write_catalog(catalogs, "home_layout", ACTIONS, mode="apprentice", apprentice_exploration=0.4)
    server = start_server(catalogs)
    others = 0
    for i in range(300):
        d = server.client.decide(f"s{i}", "home_layout")
        ranking = {r.action_id: r.probability for r in d.ranking}
        assert d.arm == pb.DECISION_ARM_APPRENTICE and abs(sum(ranking.values()) - 1.0) < 1e-9
        assert d.probability == ranking[d.action_id]
        assert ranking["a"] >= 0.6 and all(ranking[x] <= 0.4 for x in "bc")  # a: the first action, the baseline
        if d.model_action_id == "a":
            assert abs(ranking["a"] - (0.6 + 0.4 * d.model_probability)) < 1e-9
        else:
            assert abs(ranking[d.model_action_id] - 0.4 * d.model_probability) < 1e-9
        others += d.action_id != "a"
    assert 40 <= others <= 160  # about 0.4 * 2/3 of 300 (untrained model: near uniform) = 80


def test_switching_to_apprentice_through_admin_keeps_the_model(
    start_server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    catalogs = tmp_path / "catalogs"
    catalogs.mkdir()
    path = write_catalog(catalogs, "home_layout", ACTIONS, reward_window_seconds=30)
    server = start_server(catalogs)
    before = server.client.decide("s0", "home_layout")
    assert before.arm == pb.DECISION_ARM_POLICY and before.model_action_id == ""
    doc = yaml.safe_load(path.read_text())
    doc["policy"]["mode"] = "apprentice"
    catalog = struct_pb2.Struct()
    json_format.ParseDict(doc, catalog)
    admin = apb_grpc.AdminServiceStub(server.channel)
    done = admin.PutDecisionPoint(apb.PutDecisionPointRequest(catalog=catalog), timeout=10)
    assert done.changed
    assert server.wait_for(lambda: server.app.service.catalogs["home_layout"].policy.mode == "apprentice")
    after = server.client.decide("s1", "home_layout")
    assert after.arm == pb.DECISION_ARM_APPRENTICE and after.action_id == "a"
    assert after.model_version.split(".")[0] == before.model_version.split(".")[0]  # same flags: the same model


def test_holdout_sessions_are_sticky_get_the_baseline_and_are_not_learned(
    start_server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    catalogs = tmp_path / "catalogs"
    catalogs.mkdir()
    write_catalog(catalogs, "home_layout", ACTIONS, holdout_share=0.5, reward_window_seconds=0.3)
    server = start_server(catalogs)
    arms: dict[str, set[int]] = {}
    rewards: dict[str, list[float]] = {"policy": [], "holdout": []}
    for i in range(200):
        session = f"shopper-{i % 40}"
        d = server.client.decide(session, "home_layout")
        arms.setdefault(session, set()).add(d.arm)
        if d.arm == pb.DECISION_ARM_HOLDOUT:
            assert d.action_id == "a" and d.probability == 1.0 and d.ranking[0].action_id == "a"
        else:
            assert d.arm == pb.DECISION_ARM_POLICY
        reward = float(i % 3 != 0) if d.action_id != "a" else float(i % 4 == 0)  # the baseline earns less
        if reward:
            server.client.report_rewards([(d.event_id, reward, f"r{i}")])
        rewards["holdout" if d.arm == pb.DECISION_ARM_HOLDOUT else "policy"].append(reward)
    assert all(len(seen) == 1 for seen in arms.values())  # sticky: a session is always in the same arm
    held = {s for s, seen in arms.items() if seen == {pb.DECISION_ARM_HOLDOUT}}
    assert held == {s for s in arms if in_holdout(s, 0.5)}  # fixed by the session id: every replica agrees
    assert 8 <= len(held) <= 32
    n_policy, n_holdout = len(rewards["policy"]), len(rewards["holdout"])
    point = {"decision_point": "home_layout"}
    learned = sum(server.metric("tailor_learned_examples_total", {**point, "source": s}) for s in ("reward", "default"))
    assert server.wait_for(
        lambda: server.metric("tailor_arm_decisions_total", {**point, "arm": "holdout"}) == n_holdout, timeout=15
    )
    assert server.wait_for(
        lambda: server.metric("tailor_arm_decisions_total", {**point, "arm": "policy"}) == n_policy, timeout=15
    )
    learned = sum(server.metric("tailor_learned_examples_total", {**point, "source": s}) for s in ("reward", "default"))
    assert learned == n_policy  # holdout decisions are never learned

    def counters(arm: str) -> tuple[float, float, float]:
        labels = {**point, "arm": arm}
        return (
            server.metric("tailor_arm_decisions_total", labels),
            server.metric("tailor_arm_reward_total", labels),
            server.metric("tailor_arm_reward_squares_total", labels),
        )

    lift = difference_interval(counters("policy"), counters("holdout"))
    direct = sum(rewards["policy"]) / n_policy - sum(rewards["holdout"]) / n_holdout
    assert abs(lift.value - direct) < 1e-9 and lift.low < lift.value < lift.high
    server.stop()
    logged = lines(tmp_path / "data", tmp_path)
    assert len(logged) == 200
    for doc in logged:
        held_out = doc["_tailor"]["arm"] == "holdout"
        assert doc.get("_skipLearn", False) == held_out
        assert not held_out or (doc["_tailor"]["chosen"] == "a" and doc["_label_probability"] == 1.0)
    # tailor evaluate reports the same lift from the log alone
    report = tmp_path / "report"
    command = [sys.executable, "-m", "server", "evaluate", str(tmp_path / "export.dsjson"), "--out", str(report)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    [point_report] = json.loads((report / "report.json").read_text())["decision_points"]
    assert point_report["arms"]["served"]["holdout"]["n"] == n_holdout and point_report["skipped"] == n_holdout
    assert abs(point_report["arms"]["lift"]["policy"]["value"] - direct) < 1e-9
    assert "lift of policy over holdout" in (report / "report.md").read_text()
