"""What each candidate costs: server CPU per decision of `tailor serve` on the load benchmark's traffic
(closed loop, 32 in flight), every candidate's server started side by side and loaded in turn, repeats
interleaved, so each is a ratio to 0.1's flags measured in the same run."""

from __future__ import annotations

import contextlib
import statistics
from collections.abc import Sequence
from pathlib import Path

import yaml

from benchmarks.load.__main__ import Deployment, load
from benchmarks.load._traffic import ACTIONS, DECISION_POINT, action_features
from server.tools.launcher import ServeProcess

from ._candidates import Candidate


def _write_catalog(folder: Path, candidate: Candidate) -> None:
    folder.mkdir(parents=True)
    actions = [{"id": a, "features": action_features(i), "payload": {"template": a}} for i, a in enumerate(ACTIONS)]
    doc = {
        "decision_point": DECISION_POINT,
        "policy": {
            "reward_window_seconds": 30,
            "exploration": candidate.catalog_exploration(),
            "learning": candidate.catalog_learning(),
        },
        "actions": actions,
    }
    (folder / f"{DECISION_POINT}.yaml").write_text(yaml.safe_dump(doc))


def cpu_per_decision(
    candidates: Sequence[Candidate], tmp: Path, seconds: float, repeats: int
) -> dict[str, dict[str, float]]:
    """{candidate: {cpu_us_per_decision, decisions_per_s}} as medians over `repeats` interleaved runs."""
    runs: dict[str, list[dict[str, float]]] = {c.name: [] for c in candidates}
    with contextlib.ExitStack() as stack:
        deployments: dict[str, Deployment] = {}
        for i, c in enumerate(candidates):
            _write_catalog(tmp / f"catalogs-{i}", c)
            server = ServeProcess(tmp / f"catalogs-{i}", tmp / f"data-{i}").start()
            stack.callback(server.stop)
            assert server.proc is not None
            deployments[c.name] = Deployment([server.target], {"serve": [server.proc.pid]})
        for deployment in deployments.values():  # warm up: models, caches, connections
            load(deployment, "closed", 32, 2.0)
        for r in range(repeats):
            for name, deployment in deployments.items():
                run = load(deployment, "closed", 32, seconds)
                runs[name].append(run)
                print(f"  cpu repeat {r + 1} {name:34} {run['cpu_us_per_decision']:6.0f} µs/decision "
                      f"{run['decisions_per_s']:6.0f}/s", flush=True)  # fmt: skip
    return {
        name: {m: statistics.median(run[m] for run in rs) for m in ("cpu_us_per_decision", "decisions_per_s")}
        for name, rs in runs.items()
    }
