"""Every microsecond of serving CPU explained: native-mode profiles split by a fixed category map.

    .venv/bin/python -m benchmarks.profile [--seconds 60] [--rate 10]

Starts echo+VW (the ceiling: transport plus raw VW predict and learn, `benchmarks/load/_echo.py`), `tailor
serve` on the embedded default, and a Redis-mode replica (private redis-server, `tailor learn`); both
Tailors with API keys and their decision logs, as production runs them. Drives each with the load
benchmark's traffic at 32 shoppers in flight while py-spy samples the server process in native mode (Python
and C frames, every thread), and reads every thread's CPU from /proc/<pid>/task before and after.

Each thread's CPU per decision is split by the shares of its samples over the fixed category map of
`_categories.py` (transport, handler, learner, GC, timers, Redis client; what matches none is unexplained);
threads py-spy cannot see (grpc's C-core threads) go by their names. Writes, beside this file (or --out),
the raw collapsed stacks per deployment (`*.txt`, for speedscope or flamegraph.pl) and results.md.

py-spy pauses the process to sample it, so decisions/s while profiling are lower than in `benchmarks.load`;
the split of the CPU per decision is the figure to read.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks._results import publish
from benchmarks.load.__main__ import Deployment, EchoProcess, load
from benchmarks.load._traffic import write_catalog
from benchmarks.load.auth import write_keys
from server.tools.launcher import LearnProcess, RedisProcess, ServeProcess, cpu_seconds

from ._categories import CATEGORIES, breakdown

HERE = Path(__file__).resolve().parent
UNEXPLAINED_TARGET = 0.10


@contextlib.contextmanager
def echo_vw(catalogs: Path, tmp: Path, keys: list[str], key: str) -> Iterator[Deployment]:
    echo = EchoProcess(vw=True)
    try:
        yield Deployment([echo.target], {"serve": [echo.proc.pid]})
    finally:
        echo.stop()


@contextlib.contextmanager
def embedded(catalogs: Path, tmp: Path, keys: list[str], key: str) -> Iterator[Deployment]:
    with ServeProcess(catalogs, tmp / "embedded", keys) as server:
        assert server.proc is not None
        yield Deployment([server.target], {"serve": [server.proc.pid]}, api_key=key)


@contextlib.contextmanager
def redis_replica(catalogs: Path, tmp: Path, keys: list[str], key: str) -> Iterator[Deployment]:
    with contextlib.ExitStack() as stack:
        redis = RedisProcess().start()
        stack.callback(redis.stop)
        prefix = f"profile-{uuid.uuid4().hex[:8]}"
        learner = LearnProcess(catalogs, redis.url, prefix, tmp / "learn.log").start()
        stack.callback(learner.stop)
        args = ["--redis-url", redis.url, "--redis-prefix", prefix, *keys]
        server = stack.enter_context(ServeProcess(catalogs, tmp / "replica", args))
        assert server.proc and learner.proc and redis.proc
        roles = {"serve": [server.proc.pid], "learn": [learner.proc.pid], "redis": [redis.proc.pid]}
        yield Deployment([server.target], roles, api_key=key)


def thread_cpu(pid: int) -> dict[int, tuple[str, float]]:
    """CPU seconds so far of every thread of a live process, with its name (Linux /proc/<pid>/task)."""
    result = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(FileNotFoundError):  # a thread that ended meanwhile
            name = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
            result[int(tid)] = (name, cpu_seconds(pid, int(tid)))
    return result


def record(py_spy: str, deployment: Deployment, seconds: float, rate: int, out: Path) -> dict[str, Any]:
    """Load the deployment for `seconds` while py-spy samples its serving process; returns the load figures
    and the serving process's CPU per decision by (category, detail)."""
    load(deployment, "closed", 32, 3.0)  # warm up
    pid = deployment.pids[0]
    before = thread_cpu(pid)
    spy = subprocess.Popen(
        [py_spy, "record", "-p", str(pid), "-d", f"{seconds + 1:.0f}", "-r", str(rate), "--native", "--threads",
         "-f", "raw", "-o", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(0.5)
    figures = load(deployment, "closed", 32, seconds)
    after = thread_cpu(pid)
    spy.wait(60)
    decisions = figures["decisions_per_s"] * seconds
    per_thread = {
        tid: (name, (cpu - before.get(tid, (name, 0.0))[1]) / decisions * 1e6) for tid, (name, cpu) in after.items()
    }
    split = breakdown(out.read_text(), per_thread)
    return figures | {
        "split": [[category, detail, us] for (category, detail), us in sorted(split.items())],
        "threads": {str(tid): [name, us] for tid, (name, us) in per_thread.items()},  # to split the stacks again
    }


def totals(split: list[list[Any]]) -> dict[str, float]:
    by: dict[str, float] = dict.fromkeys(CATEGORIES, 0.0)
    for category, _, us in split:
        by[category] += us
    return by


def report(result: dict[str, Any]) -> str:
    names = list(result["deployments"])
    runs = result["deployments"]
    lines = [
        f"Measured {result['when']}; {result['seconds']:g} s of closed-loop load at 32 in flight per deployment, "
        f"py-spy in native mode at {result['rate']} Hz. Command: `{result['command']}`.",
        "",
        "Serving process CPU per decision, µs, by category (each thread's CPU from /proc split by its samples):",
        "",
        "| category | detail | " + " | ".join(names) + " |",
        "|---|---|" + "---:|" * len(names),
    ]
    sums = {name: totals(runs[name]["split"]) for name in names}
    details = sorted(
        {(c, d) for name in names for c, d, _ in runs[name]["split"]}, key=lambda k: (CATEGORIES.index(k[0]), k[1])
    )
    for category in CATEGORIES:
        cells = " | ".join(f"**{sums[n][category]:.0f}**" for n in names)
        lines.append(f"| **{category}** | | {cells} |")
        for c, detail in details:
            if c != category:
                continue
            values = {n: sum(us for cc, d, us in runs[n]["split"] if (cc, d) == (c, detail)) for n in names}
            lines.append(f"| | {detail} | " + " | ".join(f"{values[n]:.0f}" for n in names) + " |")
    lines.append("| **serving process** | | " + " | ".join(f"**{sum(sums[n].values()):.0f}**" for n in names) + " |")
    lines += [
        "",
        "| deployment | decisions/s while sampled | unexplained | other processes, µs/decision |",
        "|---|---:|---:|---|",
    ]
    for name in names:
        run = runs[name]
        share = sums[name]["unexplained"] / max(1e-9, sum(sums[name].values()))
        others = ", ".join(
            f"{role} {run[f'cpu_us_per_decision_{role}']:.0f}"
            for role in ("learn", "redis")
            if f"cpu_us_per_decision_{role}" in run
        )
        lines.append(f"| {name} | {run['decisions_per_s']:.0f} | {share:.1%} | {others or '-'} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="of load (and sampling) per deployment")
    parser.add_argument(
        "--rate", type=int, default=10, help="py-spy samples per second (at 50 native sampling slows the server 3x)"
    )
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    result: dict[str, Any] = {
        "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": ".venv/bin/python -m benchmarks.profile",
        "seconds": args.seconds,
        "rate": args.rate,
        "deployments": {},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tailor-profile-") as tmp:
        catalogs = Path(tmp) / "catalogs"
        catalogs.mkdir()
        write_catalog(catalogs)
        key = write_keys(Path(tmp) / "keys.yaml", 20)
        keys = ["--api-keys", str(Path(tmp) / "keys.yaml")]
        for name, deploy in (("echo+VW", echo_vw), ("embedded", embedded), ("redis replica", redis_replica)):
            with deploy(catalogs, Path(tmp), keys, key) as deployment:
                out = args.out / f"{name.replace(' ', '_').replace('+', '_')}.txt"
                result["deployments"][name] = record(py_spy, deployment, args.seconds, args.rate, out)
    publish(args.out, result, report(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
