"""What a crashed Redis Cluster primary costs: acknowledged rewards lost to asynchronous replication, and downtime.

    .venv/bin/python -m benchmarks.failover [--trials 3] [--seconds 4]

A private Redis Cluster (3 primaries with a replica each, cluster-node-timeout 2 s, AOF off as in the tests),
two `tailor serve --redis-cluster` replicas and `tailor learn --redis-cluster`. Each trial drives decisions on
one replica, each rewarded at once through the other, kills -9 a primary that holds sessions and decision
shards (never the control plane's), waits for its replica to take over, drives on, and restarts the killed
node (it rejoins as a replica). Then every reward acknowledged ACCEPTED is looked up in the decision log the
learner writes: an acknowledged reward whose decision never reached it was lost. Also counted: calls that
failed (UNAVAILABLE) and decisions served fail-open while the slots were down, and how long that lasted.
Writes results.json and results.md beside this file (or --out).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import redis
import yaml

from benchmarks._results import publish
from server.state.evidence import unpack
from server.tools.launcher import LearnProcess, RedisClusterProcess, ServeProcess, metric_sum
from tailor.client import TailorClient
from tailor.v1 import decision_service_pb2 as pb

HERE = Path(__file__).resolve().parent


class Traffic(threading.Thread):
    """Decide on one replica, reward at once through the other; what was acknowledged, and when calls failed."""

    def __init__(self, decide: str, reward: str) -> None:
        super().__init__(daemon=True)
        self.decide, self.reward = TailorClient(decide), TailorClient(reward)
        self.stop = threading.Event()
        self.accepted: set[str] = set()
        self.failures: list[float] = []  # monotonic times of failed calls

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            i += 1
            try:
                d = self.decide.decide(f"s{i % 200}", "home_layout", context={"seg": f"g{i % 3}"})
                [result] = self.reward.report_rewards([(d.event_id, 1.0, "r")])
            except grpc.RpcError:
                self.failures.append(time.monotonic())
                continue
            if result.status == pb.REWARD_STATUS_ACCEPTED:
                self.accepted.add(d.event_id)


def logged(url: str, prefix: str) -> set[str]:
    client = redis.RedisCluster.from_url(url)
    try:
        entries: Any = client.xrange(f"{prefix}:{{m}}:decisions")
        return {json.loads(unpack(fields[b"z"]))["EventId"] for _, fields in entries}
    finally:
        client.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0, help="traffic before the kill and after the takeover")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    os.environ["TAILOR_DECISION_LOG_PSEUDONYMIZE"] = "false"  # the log's event ids are the clients'
    trials: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="tailor-failover-") as tmp_name, RedisClusterProcess() as cluster:
        tmp = Path(tmp_name)
        catalogs = tmp / "catalogs"
        catalogs.mkdir()
        doc = {
            "decision_point": "home_layout",
            "policy": {"reward_window_seconds": 1},
            "actions": [{"id": "a"}, {"id": "b"}],
        }
        (catalogs / "home_layout.yaml").write_text(yaml.safe_dump(doc))
        for trial in range(args.trials):
            prefix = f"fo{uuid.uuid4().hex[:6]}"
            shared = ["--redis-url", cluster.url, "--redis-prefix", prefix, "--redis-cluster"]
            with contextlib.ExitStack() as stack:  # whatever happens, the trial's processes stop with it
                replicas = []
                for i in range(2):
                    replicas.append(ServeProcess(catalogs, tmp / f"data-{trial}-{i}", shared))
                    stack.callback(replicas[-1].stop)
                    replicas[-1].start()
                learner = LearnProcess(catalogs, cluster.url, prefix, tmp / f"learn-{trial}.log", ["--redis-cluster"])
                stack.callback(learner.stop)
                learner.start()
                control = redis.RedisCluster.from_url(cluster.url).get_node_from_key(f"{prefix}:{{m}}:models")  # type: ignore[no-untyped-call]
                victim = next(n for n in cluster.primaries() if n.port != control.port)
                traffic = Traffic(replicas[0].target, replicas[1].target)
                stack.callback(traffic.stop.set)
                traffic.start()
                time.sleep(args.seconds)
                killed = time.monotonic()
                victim.kill()
                while victim.port in {n.port for n in cluster.primaries()}:
                    time.sleep(0.05)
                cluster.wait_healthy(60)
                promoted = time.monotonic() - killed
                time.sleep(args.seconds)
                traffic.stop.set()
                traffic.join(30)
                fail_open = metric_sum(replicas[0].metrics(), "tailor_decide_fail_open_total")
                deadline = time.monotonic() + 30
                while not traffic.accepted <= logged(cluster.url, prefix) and time.monotonic() < deadline:
                    time.sleep(0.5)
                lost = len(traffic.accepted - logged(cluster.url, prefix))
                down = [t - killed for t in traffic.failures if t >= killed]
                trials.append(
                    {
                        "acknowledged": len(traffic.accepted),
                        "lost": lost,
                        "failed_calls": len(traffic.failures),
                        "fail_open_decisions": fail_open,
                        "takeover_seconds": promoted,
                        "last_failure_after_kill_seconds": max(down) if down else 0.0,
                    }
                )
                print(f"trial {trial + 1}: {trials[-1]}", flush=True)
            victim.start()  # back as a replica of its successor
            cluster.wait_healthy(60)
    acknowledged = sum(t["acknowledged"] for t in trials)
    lost = sum(t["lost"] for t in trials)
    result: dict[str, Any] = {
        "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": f".venv/bin/python -m benchmarks.failover --trials {args.trials} --seconds {args.seconds:g}",
        "trials": trials,
        "acknowledged": acknowledged,
        "lost": lost,
    }
    rows = [
        f"| {i + 1} | {t['acknowledged']:,} | {t['lost']} | {t['takeover_seconds']:.1f} | "
        f"{t['last_failure_after_kill_seconds']:.1f} | {t['failed_calls']} | {t['fail_open_decisions']:.0f} |"
        for i, t in enumerate(trials)
    ]
    table = "\n".join(
        [
            f"Measured {result['when']}: `{result['command']}` (3 primaries + 3 replicas on one 2-core machine, "
            "cluster-node-timeout 2 s).",
            "",
            "| trial | rewards acknowledged | of them lost | replica took over after (s) | last failed call after the "
            "kill (s) | failed calls | decisions served fail-open |",
            "|---|---|---|---|---|---|---|",
            *rows,
            "",
            f"Lost to asynchronous replication: **{lost} of {acknowledged:,}** acknowledged rewards.",
            "",
        ]
    )
    publish(args.out, result, table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
