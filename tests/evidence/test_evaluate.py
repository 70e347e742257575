"""`tailor evaluate`: IPS, SNIPS and DR estimates, with intervals, of the logged, uniform, baseline and candidate
policies on DSJSON decision logs; checked on a synthetic log whose true values are known, on a real server's
exported log, and on its errors (clear messages and exit codes, never a traceback)."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from policies import action_line, encode_features, shared_line
from server.state.decision_log import Decision, DecisionRecord
from server.state.evidence import Outcome, Pseudonymizer, dsjson_line

from ..conftest import RunningServer, write_catalog
from .test_decision_log import ACTIONS, export, traffic

IDS = ("a", "b", "c")
#: The synthetic world: P(reward 1 | device, action). "b" is best on mobile, "c" on desktop; "a" is the baseline.
MEANS = {"mobile": {"a": 0.2, "b": 0.8, "c": 0.3}, "desktop": {"a": 0.2, "b": 0.3, "c": 0.8}}
UNIFORM_VALUE = sum(sum(m.values()) / len(IDS) for m in MEANS.values()) / len(MEANS)  # devices equally likely: 0.433
BASELINE_VALUE = 0.2
BEST_VALUE = 0.8  # no policy can earn more than always the best action of each device
T0 = 1_700_000_000.0
ESTIMATORS = ("ips", "snips", "dr")


def record(event_id: str, point: str, device: str, chosen: int, reward: float, at: float) -> DecisionRecord:
    """A decision of the uniform random logging policy: every candidate at 1/3, the ranking lists all three."""
    decision = Decision(
        event_id=event_id,
        action_id=IDS[chosen],
        probability=1 / 3,
        ranking=tuple((a, 1 / 3) for a in IDS),
        payload={},
        model_version="m1",
    )
    return DecisionRecord(
        decision=decision,
        session_id=f"session-{event_id}",
        decision_point=point,
        shared=shared_line(encode_features([("device", device)])),
        actions=tuple(action_line(a, {"style": a}) for a in IDS),
        chosen=chosen,
        created_at=at,
        window_seconds=60.0,
        aggregation="first",
        reward_range=(0.0, 1.0),
        default_reward=0.0,
        grace_seconds=60.0,
        activated_at=at,
        rewards=(reward,),
    )


def world(n: int, seed: int, point: str = "home_layout", outcome: Outcome = "reward", first: int = 0) -> list[str]:
    """n DSJSON lines of the synthetic world logged by uniform random, with Bernoulli rewards of MEANS."""
    rng = random.Random(seed)
    lines = []
    for i in range(first, first + n):
        device = rng.choice(("mobile", "desktop"))
        chosen = rng.randrange(len(IDS))
        reward = 1.0 if rng.random() < MEANS[device][IDS[chosen]] else 0.0
        at = T0 + i
        rec = record(f"{point}-{i}", point, device, chosen, reward, at)
        lines.append(dsjson_line(rec, reward, outcome, at + 60.0, Pseudonymizer(None)))
    return lines


def write(path: Path, lines: Sequence[str]) -> Path:
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


def evaluate(*args: str | Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "server", "evaluate", *map(str, args)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert "Traceback" not in done.stderr, done.stderr
    return done


def point_report(out: Path, point: str = "home_layout") -> dict[str, Any]:
    document = json.loads((out / "report.json").read_text())
    [found] = [p for p in document["decision_points"] if p["decision_point"] == point]
    result: dict[str, Any] = found
    return result


def policies(point: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["policy"]: row for row in point["policies"]}


def rewards(lines: Sequence[str]) -> list[float]:
    return [float(json.loads(line)["_tailor"]["reward"]) for line in lines]


def test_estimates_on_a_synthetic_log_agree_with_the_known_truth(tmp_path: Path) -> None:
    n = 2000
    lines = world(n, seed=7)
    log = write(tmp_path / "log.dsjson", lines)
    candidates = tmp_path / "candidates.yaml"
    candidates.write_text(
        yaml.safe_dump(
            {"candidates": [{"name": "greedy", "exploration": {"algorithm": "epsilon_greedy", "epsilon": 0.05}}]}
        )
    )
    out = tmp_path / "report"
    done = evaluate(log, "--out", out, "--candidates", candidates)
    assert done.returncode == 0, done.stderr
    assert f"{n} decisions" in done.stderr

    point = point_report(out)
    assert point["decisions"] == n and point["skipped"] == 0 and point["baseline"] == "a"
    assert point["reward_range"] == [0.0, 1.0]
    rows = policies(point)
    assert list(rows) == ["logged", "uniform", "baseline", "greedy"]
    assert [row["kind"] for row in rows.values()] == ["logged", "uniform", "baseline", "candidate"]
    for row in rows.values():
        for method in ESTIMATORS:
            estimate = row[method]
            assert set(estimate) >= {"value", "low", "high", "n"} and estimate["n"] == n
            assert 0.0 <= estimate["low"] <= estimate["high"] <= 1.0
            assert estimate["low"] <= estimate["value"] <= estimate["high"]

    # The logged policy's weights are all 1: IPS and SNIPS are the plain mean reward (the logged propensity is
    # the served probability 1/3, not the float32 `_label_probability` VW's text parser read, one step off).
    mean = sum(rewards(lines)) / n
    assert point["logged_mean"] == mean
    assert abs(rows["logged"]["ips"]["value"] - mean) < 1e-9 and abs(rows["logged"]["snips"]["value"] - mean) < 1e-9
    # The logging policy was uniform: the two are the same policy, estimated alike.
    for method in ESTIMATORS:
        assert rows["uniform"][method]["value"] == rows["logged"][method]["value"]

    # Each estimate within 4 standard errors of the truth (at n = 2000: 0.045 for uniform, a Bernoulli mean, and
    # 0.067 for the baseline, whose IPS terms are 3·r on a third of the decisions), and inside its 95% interval.
    uniform_se = math.sqrt(UNIFORM_VALUE * (1 - UNIFORM_VALUE) / n)
    baseline_se = math.sqrt((3 * BASELINE_VALUE - BASELINE_VALUE**2) / n)
    for name, truth, se in (
        ("logged", UNIFORM_VALUE, uniform_se),
        ("uniform", UNIFORM_VALUE, uniform_se),
        ("baseline", BASELINE_VALUE, baseline_se),
    ):
        for method in ESTIMATORS:
            estimate = rows[name][method]
            assert abs(estimate["value"] - truth) < 4 * se, (name, method, estimate)
            assert estimate["low"] <= truth <= estimate["high"], (name, method, estimate)

    # The greedy candidate learns "b on mobile, c on desktop": clearly better than uniform, by every estimator,
    # and not better than always choosing the best action.
    for method in ESTIMATORS:
        greedy = rows["greedy"][method]
        assert greedy["low"] > rows["uniform"][method]["value"], (method, greedy)
        assert greedy["low"] > UNIFORM_VALUE + 0.2 and greedy["low"] < BEST_VALUE, (method, greedy)
    assert "--epsilon 0.05" in rows["greedy"]["description"] and rows["greedy"]["replay_seconds"] >= 0

    md = (out / "report.md").read_text()
    assert "IPS" in md and "SNIPS" in md and "DR" in md and "## home_layout" in md
    assert "| greedy |" in md and "| baseline |" in md and "(home_layout.png)" in md
    assert (out / "home_layout.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_a_missing_log_file_is_a_usage_error(tmp_path: Path) -> None:
    log = write(tmp_path / "log.dsjson", world(20, seed=1))
    done = evaluate(log, tmp_path / "nowhere.dsjson", "--out", tmp_path / "out")
    assert done.returncode == 2
    assert "no such file or directory" in done.stderr and "nowhere.dsjson" in done.stderr
    assert not (tmp_path / "out").exists()


def test_a_malformed_line_is_named_by_file_and_line(tmp_path: Path) -> None:
    good = world(5, seed=1)
    log = write(tmp_path / "log.dsjson", [*good[:2], "", good[2][:40], *good[3:]])
    done = evaluate(log, "--out", tmp_path / "out")
    assert done.returncode == 1
    assert f"{log}:4: not a Tailor decision line" in done.stderr
    assert not (tmp_path / "out").exists()
    # Valid JSON, but its chosen action is not among the candidates: an error too, not a crash.
    doc = json.loads(good[0])
    doc["_labelIndex"] = 7
    log = write(tmp_path / "bad-label.dsjson", [good[1], json.dumps(doc)])
    done = evaluate(log, "--out", tmp_path / "out")
    assert done.returncode == 1 and f"{log}:2: not a Tailor decision line" in done.stderr


def test_a_bad_candidates_file_names_the_field(tmp_path: Path) -> None:
    log = write(tmp_path / "log.dsjson", world(20, seed=1))
    candidates = tmp_path / "candidates.yaml"
    cases: list[tuple[dict[str, Any], str]] = [
        ({"candidates": [{"name": "x", "explore": {"algorithm": "squarecb"}}]}, "candidates.0.explore"),
        (
            {"candidates": [{"name": "x", "exploration": {"algorithm": "epsilon_greedy", "epsilon": 2}}]},
            "candidates.0.exploration.epsilon_greedy.epsilon",
        ),
        ({"candidates": [{"name": "x", "learning": {"bits": 99}}]}, "candidates.0.learning.bits"),
        ({"candidates": [{"name": "uniform"}]}, "candidate names must be unique"),
    ]
    for content, message in cases:
        candidates.write_text(yaml.safe_dump(content))
        done = evaluate(log, "--out", tmp_path / "out", "--candidates", candidates)
        assert done.returncode == 2, done.stderr
        assert f"--candidates {candidates}: " in done.stderr and message in done.stderr, done.stderr
    assert not (tmp_path / "out").exists()


def test_bad_alpha_and_unknown_baseline_are_usage_errors(tmp_path: Path) -> None:
    log = write(tmp_path / "log.dsjson", world(20, seed=1))
    done = evaluate(log, "--out", tmp_path / "out", "--alpha", "2")
    assert done.returncode == 2 and "--alpha must be in (0, 1)" in done.stderr
    # A baseline that is no candidate would be reported under its name with another action's value.
    done = evaluate(log, "--out", tmp_path / "out", "--baseline", "zz")
    assert done.returncode == 2 and "--baseline 'zz' is not a candidate of 'home_layout'" in done.stderr
    assert not (tmp_path / "out").exists()


def test_never_activated_decisions_are_not_evaluated(tmp_path: Path) -> None:
    served = world(100, seed=3)
    # Never seen: rewards of 1.0 that would lift every estimate if they were counted.
    unseen = [
        line.replace('"reward":0.0', '"reward":1.0') for line in world(7, seed=4, outcome="unactivated", first=100)
    ]
    assert all(json.loads(line)["_skipLearn"] is True for line in unseen)
    log = write(tmp_path / "log.dsjson", [*served[:50], *unseen, *served[50:]])
    out = tmp_path / "out"
    done = evaluate(log, "--out", out)
    assert done.returncode == 0, done.stderr
    point = point_report(out)
    assert point["decisions"] == 100 and point["skipped"] == 7
    mean = sum(rewards(served)) / 100
    logged = policies(point)["logged"]
    assert point["logged_mean"] == mean and abs(logged["ips"]["value"] - mean) < 1e-9 and logged["ips"]["n"] == 100
    assert "tailor-defaults" in policies(point)  # without --candidates: Tailor's default settings
    assert "7 never-learned decisions (never activated, or holdout) not replayed" in (out / "report.md").read_text()


def test_decision_point_selects_and_duplicates_across_files_count_once(tmp_path: Path) -> None:
    home = world(150, seed=5)
    cart = world(40, seed=6, point="cart_offer")
    first = write(tmp_path / "first.dsjson", [*home[:100], *cart])
    second = write(tmp_path / "second.dsjson", [*cart[:10], *home[50:]])  # an overlapping export
    out = tmp_path / "all"
    done = evaluate(first, second, "--out", out)
    assert done.returncode == 0, done.stderr
    assert point_report(out, "home_layout")["decisions"] == 150
    assert point_report(out, "cart_offer")["decisions"] == 40
    assert point_report(out, "home_layout")["logged_mean"] == sum(rewards(home)) / 150
    assert {p.name for p in out.glob("*.png")} == {"home_layout.png", "cart_offer.png"}

    out = tmp_path / "cart"
    done = evaluate(first, second, "--out", out, "--decision-point", "cart_offer")
    assert done.returncode == 0, done.stderr
    document = json.loads((out / "report.json").read_text())
    assert [p["decision_point"] for p in document["decision_points"]] == ["cart_offer"]
    assert document["decision_points"][0]["decisions"] == 40
    assert [p.name for p in out.glob("*.png")] == ["cart_offer.png"]
    assert "home_layout" not in (out / "report.md").read_text()

    done = evaluate(first, "--out", tmp_path / "none", "--decision-point", "checkout")
    assert done.returncode == 1 and "no decisions" in done.stderr


def test_a_real_servers_exported_log_evaluates(start_server: Callable[..., RunningServer], tmp_path: Path) -> None:
    catalogs = tmp_path / "catalogs"
    catalogs.mkdir()
    write_catalog(catalogs, "home_layout", ACTIONS, reward_window_seconds=0.3)
    server = start_server(catalogs)
    n = 120
    hits, _ = traffic(server, n, rewarded="b")
    assert 0 < hits < n

    def learned() -> float:
        return sum(
            server.metric("tailor_learned_examples_total", {"decision_point": "home_layout", "source": source})
            for source in ("reward", "default")
        )

    assert server.wait_for(lambda: learned() == n, timeout=15)
    server.stop()
    log = tmp_path / "decisions.dsjson"
    exported = export("--out", str(log), "--data-dir", str(tmp_path / "data"))
    assert exported.returncode == 0, exported.stderr

    out = tmp_path / "report"
    done = evaluate(log, "--out", out)
    assert done.returncode == 0, done.stderr
    point = point_report(out)
    assert point["decisions"] == n and point["skipped"] == 0 and point["baseline"] == "a"
    rows = policies(point)
    assert list(rows) == ["logged", "uniform", "baseline", "tailor-defaults"]
    assert point["logged_mean"] == hits / n
    assert abs(rows["logged"]["ips"]["value"] - hits / n) < 1e-9
    assert abs(rows["logged"]["snips"]["value"] - hits / n) < 1e-9
    assert all(rows[name][method]["n"] == n for name in rows for method in ESTIMATORS)
    assert (out / "home_layout.png").read_bytes().startswith(b"\x89PNG")
