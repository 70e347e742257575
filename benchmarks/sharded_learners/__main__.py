"""Learners sharded by decision point: 1 against 2 `tailor learn` processes draining the same pre-filled backlog.

    .venv/bin/python -m benchmarks.sharded_learners [--per-point 25000] [--points 4] [--repeats 3]

A private redis-server; for each run a fresh key prefix whose learn streams hold `points x per-point` decisions
handed off and not yet learned (entries as a replica's reward join writes them, decisions like the load
benchmark's: 15 actions, 20 request and 20 session features). Then N learners start at once, and the run
ends when the published models cover every entry. Runs of 1 and 2 learners are interleaved, medians over
repeats; the figure is the drain rate (entries per second of wall time, from the learners' start to the
last publish) of 2 learners against 1. Writes results.json and results.md beside this file (or --out).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
import redis.asyncio as aioredis
import yaml

from benchmarks._results import publish
from benchmarks.learner.__main__ import examples
from server.state.decision_log import Decision, RedisDecisionLog
from server.tools.launcher import LearnProcess, RedisProcess, cpu_seconds

HERE = Path(__file__).resolve().parent
SHARDS = 16


def catalogs(folder: Path, points: int) -> list[str]:
    names = [f"point_{i}" for i in range(points)]
    for name in names:
        doc = {
            "decision_point": name,
            "policy": {"reward_window_seconds": 60},
            "actions": [{"id": f"a{i}", "features": {"style": f"s{i % 5}", "density": i % 7}} for i in range(15)],
        }
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(doc))
    return names


def prefill(client: redis.Redis, prefix: str, names: list[str], per_point: int) -> int:
    """Learn-stream entries for every decision point, spread over the shards as a replica's joins spread them."""
    log = RedisDecisionLog(aioredis.Redis(), prefix, SHARDS)  # for its key names only: never connects
    total = 0
    for name in names:
        records = examples(per_point, seed=len(name) + total)
        pipe = client.pipeline(transaction=False)
        for i, record in enumerate(records):
            record.decision_point = name
            event_id = f"{name}-{i}-{uuid.uuid4().hex[:6]}"
            record.decision = Decision(event_id, f"a{record.chosen}", 1 / 15, (), {}, "x.0")
            doc = json.dumps(record.to_json(), separators=(",", ":"))
            reward = "1.0" if i % 5 == 0 else "0.0"
            stream = log.shard(event_id).stream(name)
            pipe.xadd(stream, {"event_id": event_id, "reward": reward, "source": "reward", "doc": doc})
            if len(pipe) >= 2000:
                pipe.execute()
        pipe.execute()
        total += len(records)
    return total


def uncovered(client: redis.Redis, prefix: str, names: list[str]) -> int:
    """Learn streams whose last entry the published offsets do not cover yet (cheap: one XINFO per stream)."""
    log = RedisDecisionLog(aioredis.Redis(), prefix, SHARDS)  # for its key names only
    offsets = {k.decode(): v.decode() for k, v in client.hgetall(f"{prefix}:{{m}}:offsets").items()}  # type: ignore[union-attr]
    streams = [stream for name in names for stream in log.streams(name)]
    pipe = client.pipeline(transaction=False)
    for stream in streams:
        pipe.xinfo_stream(stream)
    infos: list[Any] = pipe.execute(raise_on_error=False)
    last = {s: i["last-generated-id"].decode() for s, i in zip(streams, infos, strict=True) if isinstance(i, dict)}
    return sum(1 for stream, at in last.items() if offsets.get(stream) != at)


def run(redis_server: RedisProcess, folder: Path, names: list[str], per_point: int, learners: int) -> dict[str, Any]:
    client = redis.Redis(port=redis_server.port)
    prefix = f"shl{uuid.uuid4().hex[:6]}"
    total = prefill(client, prefix, names, per_point)
    work = Path(tempfile.mkdtemp(prefix="tailor-shl-"))
    procs = [LearnProcess(folder, redis_server.url, prefix, work / f"learn-{i}.log") for i in range(learners)]
    started = time.monotonic()
    try:
        for proc in procs:
            proc.start()
        left = len(names) * SHARDS
        while left:
            time.sleep(0.1)
            left = uncovered(client, prefix, names)
            if time.monotonic() - started > 600:
                raise RuntimeError(f"{left} learn streams not covered after 600 s (logs in {work})")
        seconds = time.monotonic() - started
        cpu = [cpu_seconds(p.proc.pid) for p in procs if p.proc is not None]
        held = [int(p.sample("tailor_learner_decision_points")) for p in procs]
    finally:
        for proc in procs:
            proc.stop()
    for key in client.scan_iter(f"{prefix}:*", count=1000):
        client.delete(key)
    client.close()
    return {
        "learners": learners,
        "entries": total,
        "seconds": seconds,
        "rate": total / seconds,
        "cpu_seconds": cpu,
        "held": held,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-point", type=int, default=25_000)
    parser.add_argument("--points", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    os.environ.setdefault("TAILOR_PUBLISH_INTERVAL_SECONDS", "1.0")
    runs: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
    redis_server = RedisProcess().start()
    with contextlib.ExitStack() as stack:
        stack.callback(redis_server.stop)
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="tailor-shl-cat-"))
        folder = Path(tmp)
        names = catalogs(folder, args.points)
        for repeat in range(args.repeats):
            for n in (1, 2) if repeat % 2 == 0 else (2, 1):
                result = run(redis_server, folder, names, args.per_point, n)
                print(
                    f"repeat {repeat + 1}: {n} learner(s): {result['entries']} entries in {result['seconds']:.1f} s "
                    f"({result['rate']:.0f}/s; decision points held {result['held']})",
                    flush=True,
                )
                runs[n].append(result)
    one = statistics.median(r["rate"] for r in runs[1])
    two = statistics.median(r["rate"] for r in runs[2])
    result_doc: dict[str, Any] = {
        "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": ".venv/bin/python -m benchmarks.sharded_learners"
        + f" --per-point {args.per_point} --points {args.points} --repeats {args.repeats}",
        "cpus": os.cpu_count(),
        "runs": runs,
        "median_rate": {"1": one, "2": two},
        "ratio": two / one,
        "target": 1.6,
        "passed": two / one >= 1.6,
    }
    rows = []
    for n in (1, 2):
        seconds = ", ".join(f"{r['seconds']:.1f}" for r in runs[n])
        cpu = ", ".join(f"{c:.1f}" for c in runs[n][-1]["cpu_seconds"])
        rate = statistics.median(r["rate"] for r in runs[n])
        rows.append(f"| {n} | {rate:,.0f} | {seconds} | {cpu} |\n")
    verdict = "PASS" if result_doc["passed"] else "MISS"
    table = (
        f"Measured {result_doc['when']}: `{result_doc['command']}` ({os.cpu_count()} cores; Redis and the learners "
        "share them).\n\n"
        "| learners | drain rate (entries/s, median) | runs (s) | CPU s per learner (last run) |\n|---|---|---|---|\n"
        + "".join(rows)
        + f"\n2 learners / 1: **{two / one:.2f}x** (target 1.6x): {verdict}\n"
    )
    publish(args.out, result_doc, table)
    return 0 if result_doc["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
