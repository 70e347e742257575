"""Through the running service: a real `tailor serve` per run, every decision through Decide, every reward
through one ReportRewards stream (awaited before the next Decide), and the shopper simulator driving a
server whose catalog asks for the candidate's flags."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import yaml

from benchmarks.digits._service import RewardStream
from server.tools.launcher import ServeProcess, metric_sum
from server.tools.simulator import catalog_document
from tailor import TailorClient
from tailor.v1 import decision_service_pb2_grpc as pb_grpc

from ._candidates import Candidate
from ._problems import Problem

REWARD_WINDOW_SECONDS = 0.25


def _catalog(problem: Problem, candidate: Candidate) -> dict[str, Any]:
    actions = [] if problem.request_actions else problem.rounds(0)[0].actions
    return {
        "decision_point": problem.name,
        "policy": {
            "reward_window_seconds": REWARD_WINDOW_SECONDS,
            "exploration": candidate.catalog_exploration(),
            "learning": candidate.catalog_learning(),
        },
        "actions": [{"id": a, "features": dict(f)} for a, f in actions],
    }


def play_service(problem: Problem, seed: int, candidate: Candidate) -> float:
    """Mean reward of the problem's rounds for `seed` through a fresh `tailor serve`, and what it learned."""
    rounds = problem.rounds(seed)
    with tempfile.TemporaryDirectory(prefix="tailor-learning-") as tmp:
        folder = Path(tmp) / "catalogs"
        folder.mkdir()
        (folder / f"{problem.name}.yaml").write_text(yaml.safe_dump(_catalog(problem, candidate)))
        server = ServeProcess(folder, Path(tmp) / "data", log=Path(tmp) / "serve.log")
        with server, grpc.insecure_channel(server.target) as channel:
            client = TailorClient("", channel=channel, timeout=10.0)
            rewards = RewardStream(pb_grpc.DecisionServiceStub(channel))
            total, fingerprints = 0.0, set()
            for i, r in enumerate(rounds):
                ids = [a for a, _ in r.actions]
                decision = client.decide(
                    f"{problem.name}-{seed}-{i}",
                    problem.name,
                    context=dict(r.context),
                    actions={a: dict(f) for a, f in r.actions} if problem.request_actions else None,
                    event_id=f"{seed}-{i}",
                )
                fingerprints.add(decision.model_version.split(".")[0])
                reward = r.reward(problem.name, seed, i, ids.index(decision.action_id))
                total += reward
                rewards.report(decision.event_id, reward)
            rewards.close()
            deadline = time.monotonic() + 10
            while metric_sum(server.metrics(), "tailor_learned_examples_total") < len(rounds):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the service learned fewer than {len(rounds)} decisions")
                time.sleep(0.1)
    if fingerprints != {candidate.spec().fingerprint()}:
        raise RuntimeError(f"served models {fingerprints} are not the candidate's {candidate.spec().fingerprint()}")
    return total / len(rounds)


def play_simulator(candidate: Candidate, seed: int, shoppers: int, warmup: int) -> dict[str, float]:
    """`tailor simulate --target` against a server whose catalog asks for the candidate's flags; the
    after-warm-up means of the service and of the simulator's baselines on the same shoppers."""
    with tempfile.TemporaryDirectory(prefix="tailor-learning-sim-") as tmp:
        folder = Path(tmp) / "catalogs"
        folder.mkdir()
        doc = catalog_document()
        policy: dict[str, Any] = doc["policy"]  # type: ignore[assignment]
        policy["learning"] = candidate.catalog_learning()
        policy["exploration"] = candidate.catalog_exploration()
        (folder / "simulator.yaml").write_text(yaml.safe_dump(doc))
        server = ServeProcess(folder, Path(tmp) / "data", log=Path(tmp) / "serve.log")
        with server:
            args = ["--target", server.target, "--shoppers", str(shoppers), "--warmup", str(warmup)]
            args += ["--seed", str(seed), "--out", str(Path(tmp) / "out")]
            run = subprocess.run(
                [sys.executable, "-m", "server", "simulate", *args], capture_output=True, text=True, timeout=1800
            )
        results_file = Path(tmp) / "out" / "results.json"
        if not results_file.exists():
            raise RuntimeError(f"tailor simulate failed ({run.returncode}): {run.stderr[-2000:]}")
        results = json.loads(results_file.read_text())
    after: dict[str, float] = results["after_warmup"]
    return {k: after[k] for k in ("service", "oracle", "segment", "random", "single")}
