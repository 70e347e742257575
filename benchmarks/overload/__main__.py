"""Overload: closed-loop concurrency of 3x `--max-in-flight`; what the accepted calls see, and what is lost.

    .venv/bin/python -m benchmarks.overload [--max-in-flight 16] [--seconds 10]

Starts `tailor serve` (embedded, `--max-in-flight N`, the load benchmark's catalog with a 1 s reward
window so every decision is learned soon after), then drives Decide calls (the load benchmark's requests)
from a load generator process: first 1 in flight (the unloaded p99), then 3N in flight, each worker
retrying a refused call after a 5 ms pause, as a well-behaved client does. Reports the accepted calls' p99
against the unloaded p99 (target: within 3x), the share refused with RESOURCE_EXHAUSTED, any other
status, and, once every window has closed, that every decision not counted unlearnable was learned.
Writes results.json and results.md beside this file (or --out).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import yaml

from benchmarks._results import publish
from benchmarks.load._traffic import ACTIONS, DECISION_POINT, action_features, decide_request
from server.tools.launcher import ServeProcess, metric_sum
from tailor.v1 import decision_service_pb2_grpc as pb_grpc

HERE = Path(__file__).resolve().parent
TARGET = 3.0


def write_catalog(folder: Path) -> None:
    actions = [{"id": a, "features": action_features(i)} for i, a in enumerate(ACTIONS)]
    doc = {"decision_point": DECISION_POINT, "policy": {"reward_window_seconds": 1}, "actions": actions}
    (folder / f"{DECISION_POINT}.yaml").write_text(yaml.safe_dump(doc))


async def drive(target: str, workers: int, seconds: float) -> dict[str, Any]:
    """Closed loop: `workers` callers, each sending its next Decide when the last one is answered."""
    channel = grpc.aio.insecure_channel(target)
    stub = pb_grpc.DecisionServiceStub(channel)
    latencies: list[float] = []
    codes: Counter[str] = Counter()
    deadline = time.perf_counter() + seconds

    async def worker(k: int) -> None:
        rng = random.Random(k)
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                await stub.Decide(decide_request(rng, rng.randrange(2000)), timeout=10)
            except grpc.aio.AioRpcError as err:
                codes[err.code().name] += 1
                await asyncio.sleep(0.005)
                continue
            latencies.append(time.perf_counter() - started)
            codes["OK"] += 1

    await asyncio.gather(*(worker(k) for k in range(workers)))
    await channel.close(None)
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] * 1e3 if latencies else float("nan")
    return {"workers": workers, "codes": dict(codes), "accepted": len(latencies), "p99_ms": p99}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-in-flight", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--drive", nargs=3, metavar=("TARGET", "WORKERS", "SECONDS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.drive:  # the load generator's side, in its own process
        print(json.dumps(asyncio.run(drive(args.drive[0], int(args.drive[1]), float(args.drive[2])))))
        return 0

    def load(target: str, workers: int) -> dict[str, Any]:
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks.overload", "--drive", target, str(workers), str(args.seconds)],
            capture_output=True, text=True, check=True, timeout=args.seconds * 10 + 60,
        )  # fmt: skip
        result: dict[str, Any] = json.loads(out.stdout)
        return result

    with tempfile.TemporaryDirectory(prefix="tailor-overload-") as tmp:
        catalogs = Path(tmp) / "catalogs"
        catalogs.mkdir()
        write_catalog(catalogs)
        server = ServeProcess(catalogs, Path(tmp) / "data", ["--max-in-flight", str(args.max_in_flight)]).start()
        try:
            load(server.target, 4)  # warm up
            unloaded = load(server.target, 1)
            loaded = load(server.target, 3 * args.max_in_flight)
            time.sleep(3)  # every reward window (1 s) closes; the learner catches up
            text = server.metrics()
        finally:
            exit_code = server.stop()
    served = metric_sum(text, "tailor_decisions_total")
    unlearnable = metric_sum(text, "tailor_decisions_unlearnable_total")
    learned = metric_sum(text, "tailor_learned_examples_total")
    shed = loaded["codes"].get("RESOURCE_EXHAUSTED", 0)
    other = {k: v for k, v in loaded["codes"].items() if k not in ("OK", "RESOURCE_EXHAUSTED")}
    ratio = loaded["p99_ms"] / unloaded["p99_ms"]
    result: dict[str, Any] = {
        "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "max_in_flight": args.max_in_flight,
        "seconds": args.seconds,
        "unloaded": unloaded,
        "loaded": loaded,
        "p99_ratio": ratio,
        "shed_share": shed / max(1, shed + loaded["accepted"]),
        "decisions_served": served,
        "decisions_unlearnable": unlearnable,
        "decisions_learned": learned,
        "lost": served - unlearnable - learned,
        "server_exit_code": exit_code,
    }
    table = "\n".join(
        [
            "# Overload: 3x --max-in-flight, closed loop",
            "",
            f"{result['when']}, `python -m benchmarks.overload --max-in-flight {args.max_in_flight} --seconds "
            f"{args.seconds:g}`: Decide calls of the load benchmark, {3 * args.max_in_flight} workers in a closed "
            "loop (a refused call is retried after 5 ms).",
            "",
            "| figure | value |",
            "|---|---:|",
            f"| unloaded p99 (1 in flight) | {unloaded['p99_ms']:.2f} ms |",
            f"| accepted p99 at {3 * args.max_in_flight} in flight | {loaded['p99_ms']:.2f} ms |",
            f"| ratio (target ≤ {TARGET:g}x) | {ratio:.2f}x |",
            f"| accepted calls | {loaded['accepted']:,} |",
            f"| refused RESOURCE_EXHAUSTED | {shed:,} ({result['shed_share']:.1%}) |",
            f"| any other status | {sum(other.values())} {other or ''} |",
            f"| decisions served / unlearnable / learned | {served:,.0f} / {unlearnable:,.0f} / {learned:,.0f} |",
            f"| decisions lost (served, not unlearnable, not learned) | {result['lost']:,.0f} |",
            "",
            f"p99 target {'met' if ratio <= TARGET else 'missed'}; nothing lost: "
            f"{'yes' if result['lost'] == 0 else 'NO'}; server exit code {exit_code}.",
            "",
        ]
    )
    publish(args.out, result, table)
    return 0 if result["lost"] == 0 and not other else 1


if __name__ == "__main__":
    raise SystemExit(main())
