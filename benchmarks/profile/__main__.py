"""Profiles of the serving hot path under the load benchmark's traffic (py-spy, sampling the live process).

    .venv/bin/python -m benchmarks.profile [--seconds 10]

Starts `tailor serve` on the embedded default, and a Redis-mode replica (private redis-server, `tailor
learn`), drives each with the load generator at 32 shoppers in flight, and records py-spy samples of the
server's event-loop thread while it does. Writes, beside this file (or --out): a flame graph per
deployment (`embedded.svg`, `redis_replica.svg`, open them in a browser), the raw collapsed stacks
(`*.txt`, for speedscope or flamegraph.pl) and `results.md`: where the serving thread's time goes, as
inclusive shares of its samples for Tailor's own functions and the libraries under them.

py-spy pauses the process to sample it, so throughput while profiling is lower than in
`benchmarks.load`; the shares, not the rates, are the figures to read.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks._results import publish
from benchmarks.load.__main__ import Deployment, load
from benchmarks.load._traffic import write_catalog
from server.tools.launcher import LearnProcess, RedisProcess, ServeProcess

HERE = Path(__file__).resolve().parent
TOP = 28


@contextlib.contextmanager
def embedded(catalogs: Path, tmp: Path) -> Iterator[Deployment]:
    with ServeProcess(catalogs, tmp / "embedded") as server:
        assert server.proc is not None
        yield Deployment([server.target], {"serve": [server.proc.pid]})


@contextlib.contextmanager
def redis_replica(catalogs: Path, tmp: Path) -> Iterator[Deployment]:
    redis = RedisProcess().start()
    prefix = f"profile-{uuid.uuid4().hex[:8]}"
    learner = LearnProcess(catalogs, redis.url, prefix, tmp / "learn.log").start()
    try:
        with ServeProcess(catalogs, tmp / "replica", ["--redis-url", redis.url, "--redis-prefix", prefix]) as server:
            assert server.proc is not None
            yield Deployment([server.target], {"serve": [server.proc.pid]})
    finally:
        learner.stop()
        redis.stop()


def record(py_spy: str, deployment: Deployment, seconds: float, out: Path, name: str) -> dict[str, float]:
    """Load the deployment for `seconds` while py-spy samples its server; returns the load figures."""
    load(deployment, "closed", 32, 2.0)  # warm up
    pid = str(deployment.pids[0])
    collapsed = out / f"{name}.txt"
    spies = [
        subprocess.Popen([py_spy, "record", "-p", pid, "-d", f"{seconds:.0f}", "-r", "100", "-f", fmt, "-o", str(path)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for fmt, path in (("raw", collapsed), ("flamegraph", out / f"{name}.svg"))
    ]  # fmt: skip
    time.sleep(0.5)
    figures = load(deployment, "closed", 32, seconds)
    for spy in spies:
        spy.wait(60)
    return figures


def shares(collapsed: Path) -> list[tuple[str, float]]:
    """Inclusive share of the main thread's samples per function (ours and the libraries under them)."""
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if "_run_module_as_main" not in frames[0]:  # py-spy's first frame: the main thread's entry point
            continue
        total += int(count)
        for name in {f.split(" (")[0] for f in frames if " (asyncio/" not in f and "<frozen" not in f}:
            inclusive[name] += int(count)
    skip = {"_run_module_as_main", "_run_code", "<module>", "main", "run"}
    return [(k, v / total) for k, v in inclusive.most_common() if k not in skip][:TOP]


def report(result: dict[str, Any]) -> str:
    lines = [
        f"Measured {result['when']}; {result['seconds']:g} s of closed-loop load at 32 in flight per deployment, "
        f"py-spy at 100 Hz. Command: `{result['command']}`.",
        "",
    ]
    for name, r in result["deployments"].items():
        lines += [
            f"**{name}** ({r['decisions_per_s']:.0f} decisions/s while sampled, server CPU "
            f"{r['cpu_us_per_decision']:.0f} µs per decision): `{name}.svg`, `{name}.txt`",
            "",
            "| function (inclusive, serving thread) | share of samples |",
            "|---|---|",
            *(f"| `{k}` | {v:.1%} |" for k, v in r["shares"]),
            "",
        ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    result: dict[str, Any] = {
        "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": ".venv/bin/python -m benchmarks.profile",
        "seconds": args.seconds,
        "deployments": {},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tailor-profile-") as tmp:
        catalogs = Path(tmp) / "catalogs"
        catalogs.mkdir()
        write_catalog(catalogs)
        for name, deploy in (("embedded", embedded), ("redis_replica", redis_replica)):
            with deploy(catalogs, Path(tmp)) as deployment:
                figures = record(py_spy, deployment, args.seconds, args.out, name)
            result["deployments"][name] = figures | {"shares": shares(args.out / f"{name}.txt")}
    publish(args.out, result, report(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
