"""Load benchmark: `tailor serve` against an echo gRPC server of the same server type, in one run.

    .venv/bin/python -m benchmarks.load [--seconds 5] [--repeats 3]

Both servers get identical traffic from a load generator in its own process (`_loadgen.py`): shoppers
with behaviour events, Decide with 15 catalog actions and 20 context features, rewards for 30% of the
decisions; closed loop at 1, 32 and 128 in flight, open loop at 500 and 1,000 decisions/s. Runs are
interleaved (echo, Tailor, echo, ...) so machine noise hits both alike; each figure is the median over
repeats, with Tailor's ratio to echo. Server CPU per decision and peak RSS come from /proc.
Writes results.json and results.md beside this file (or --out).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc

from benchmarks._results import publish
from server._launcher import ServeProcess, cpu_seconds, free_port

from ._traffic import write_catalog

HERE = Path(__file__).resolve().parent
CONFIGS = (("closed", 1), ("closed", 32), ("closed", 128), ("open", 500), ("open", 1000))
METRICS = ("decisions_per_s", "p50_ms", "p90_ms", "p99_ms", "events_per_s", "rewards_per_s", "cpu_us_per_decision")


class EchoProcess:
    def __init__(self, vw: bool = False) -> None:
        self.port = free_port()
        args = [sys.executable, "-m", "benchmarks.load._echo", "--port", str(self.port)] + (["--vw"] if vw else [])
        self.proc = subprocess.Popen(args)
        grpc.channel_ready_future(grpc.insecure_channel(self.target)).result(timeout=30)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def median(results: list[dict[str, float]]) -> dict[str, float]:
    return {m: statistics.median(run[m] for run in results) for m in METRICS}


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def load(target: str, pid: int, mode: str, n: int, seconds: float) -> dict[str, float]:
    before = cpu_seconds(pid)
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.load._loadgen", target, mode, str(n), str(seconds)],
        capture_output=True, text=True, check=True, timeout=seconds * 10 + 60,
    )  # fmt: skip
    result: dict[str, float] = json.loads(out.stdout)
    result["cpu_us_per_decision"] = (cpu_seconds(pid) - before) / max(1, result["decisions"]) * 1e6
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="per run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tailor-load-") as tmp:
        catalogs = Path(tmp) / "catalogs"
        catalogs.mkdir()
        write_catalog(catalogs)
        echo = EchoProcess()
        tailor = ServeProcess(catalogs, Path(tmp) / "data").start()
        assert tailor.proc is not None
        servers = {"echo": (echo.target, echo.proc.pid), "tailor": (tailor.target, tailor.proc.pid)}
        runs: dict[str, dict[str, list[dict[str, float]]]] = {s: {} for s in servers}
        try:
            for target, pid in servers.values():  # warm up: models, caches, connections
                load(target, pid, "closed", 32, 2.0)
            for r in range(args.repeats):
                for mode, n in CONFIGS:
                    for name, (target, pid) in servers.items():
                        run = load(target, pid, mode, n, args.seconds)
                        runs[name].setdefault(f"{mode} {n}", []).append(run)
                        print(f"repeat {r + 1} {mode:6} {n:5} {name:6} {run['decisions_per_s']:8.0f}/s "
                              f"p99 {run['p99_ms']:7.2f} ms", flush=True)  # fmt: skip
            rss = {name: peak_rss_mb(pid) for name, (_, pid) in servers.items()}
        finally:
            echo.stop()
            tailor.stop()
    medians = {name: {config: median(results) for config, results in c.items()} for name, c in runs.items()}
    result: dict[str, Any] = {
        "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": ".venv/bin/python -m benchmarks.load",
        "seconds": args.seconds,
        "repeats": args.repeats,
        "medians": medians,
        "peak_rss_mb": rss,
        "runs": runs,
    }
    table = report(result)
    publish(args.out, result, table)
    return 0


def report(r: dict[str, Any]) -> str:
    echo, tailor = r["medians"]["echo"], r["medians"]["tailor"]
    lines = [
        f"Measured {r['when']}; {r['repeats']} repeats of {r['seconds']:g} s per configuration, medians. "
        f"Command: `{r['command']}`.",
        "",
        "| load | decisions/s (x echo) | p50 ms (x echo) | p90 ms (x echo) | p99 ms (x echo) | events/s | rewards/s "
        "| server CPU µs/decision (x echo) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for config in echo:
        e, t = echo[config], tailor[config]

        def cell(m: str, fmt: str = ".2f") -> str:
            return f"{t[m]:{fmt}} ({t[m] / e[m]:.2f}x)"  # noqa: B023

        lines.append(
            f"| {config} | {cell('decisions_per_s', '.0f')} | {cell('p50_ms')} | {cell('p90_ms')} | {cell('p99_ms')} "
            f"| {t['events_per_s']:.0f} | {t['rewards_per_s']:.0f} | {cell('cpu_us_per_decision', '.0f')} |"
        )
    rss = r["peak_rss_mb"]
    lines += [
        "",
        f"Peak RSS: Tailor {rss['tailor']:.0f} MB, echo {rss['echo']:.0f} MB ({rss['tailor'] / rss['echo']:.2f}x).",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
