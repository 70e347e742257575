"""`tailor cluster`: the local Redis-mode deployment under simulated load, with the learner killed midway."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_cluster_learns_every_decision_once_across_a_learner_crash(tmp_path: Path) -> None:
    out = tmp_path / "out"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "server",
            "cluster",
            "--shoppers",
            "3000",
            "--kill-learner-after",
            "2",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    report = json.loads((out / "cluster.json").read_text())
    assert report["learner_killed"], run.stdout[-2000:]
    assert report["decisions"] == 3000
    assert report["handed_to_learner"] == report["logged"] == 3000  # exactly once, across the crash
    assert report["uncovered"] == 0  # and all of it in the published models
    assert len(set(report["versions"])) == 1 and report["versions"][0] > 0  # both replicas, same new model
    assert report["round_trips_per_decision"] == 2.0
    assert report["passed"]
    # 3,000 shoppers are too few for the simulator's learning bar: exit 1 says so, the cluster checks passed
    assert run.returncode in (0, 1)
    assert "exactly once" in run.stdout
