"""Load benchmark: `tailor serve` against the transport floor, in one run.

    .venv/bin/python -m benchmarks.load [--seconds 5] [--repeats 3] [--no-processes]

Three servers get identical traffic from a load generator in its own process (`_loadgen.py`): shoppers
with behaviour events, Decide with 15 catalog actions and 20 context features, rewards for 30% of the
decisions; closed loop at 1, 32 and 128 in flight, open loop at 500 and 1,000 decisions/s.

- echo: a grpc.aio DecisionService of Tailor's server type answering a canned response of Tailor's size
  (the transport floor the performance targets are ratios to);
- echo+VW: the same, plus raw VW predict and learn per decision on examples of Tailor's size (the ceiling
  for any service on this transport that decides and learns with VW in the serving process);
- Tailor: `tailor serve` on the embedded default.

Runs are interleaved (echo, echo+VW, Tailor, echo, ...) so machine noise hits all alike; each figure is
the median over repeats. Server CPU per decision comes from /proc, the load generator's from its rusage.

Then (unless --no-processes) the same traffic against 1 and 2 serving processes: echo processes, and
Tailor in Redis mode (replicas sharing state in a private redis-server, with `tailor learn`), to show how
throughput and CPU per decision move with processes on this machine. Writes results.json and results.md
beside this file (or --out).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc

from benchmarks._results import publish
from server.tools.launcher import LearnProcess, RedisProcess, ServeProcess, cpu_seconds, free_port, resident_mb

from ._traffic import write_catalog

HERE = Path(__file__).resolve().parent
CONFIGS = (("closed", 1), ("closed", 32), ("closed", 128), ("open", 500), ("open", 1000))
PROCESS_CONFIGS = (("closed", 32), ("closed", 128))
METRICS = (
    "decisions_per_s", "p50_ms", "p90_ms", "p99_ms", "events_per_s", "rewards_per_s",
    "cpu_us_per_decision", "client_cpu_us_per_decision",
)  # fmt: skip


class EchoProcess:
    def __init__(self, vw: bool = False, redis_url: str | None = None, contract_keys: Path | None = None) -> None:
        self.port = free_port()
        args = [sys.executable, "-m", "benchmarks.load._echo", "--port", str(self.port)] + (["--vw"] if vw else [])
        args += ["--redis-url", redis_url] if redis_url else []
        args += ["--contract", str(contract_keys)] if contract_keys else []
        self.proc = subprocess.Popen(args)
        grpc.channel_ready_future(grpc.insecure_channel(self.target)).result(timeout=60)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


class Deployment:
    """What one load run is aimed at: the addresses to spread shoppers over, and the pids doing server work
    by role (serving processes first)."""

    def __init__(self, targets: Sequence[str], roles: Mapping[str, Sequence[int]], api_key: str | None = None) -> None:
        self.targets = ",".join(targets)
        self.api_key = api_key
        self.roles = {role: list(pids) for role, pids in roles.items()}
        self.pids = [pid for pids in self.roles.values() for pid in pids]


def median(results: list[dict[str, float]]) -> dict[str, float]:
    return {m: statistics.median(run[m] for run in results) for m in results[0] if m in METRICS or "cpu" in m}


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def load(deployment: Deployment, mode: str, n: int, seconds: float) -> dict[str, float]:
    before = {role: sum(cpu_seconds(p) for p in pids) for role, pids in deployment.roles.items()}
    client_before = children_cpu()
    env = {k: v for k, v in os.environ.items() if k != "TAILOR_API_KEY"}
    if deployment.api_key:
        env["TAILOR_API_KEY"] = deployment.api_key
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.load._loadgen", deployment.targets, mode, str(n), str(seconds)],
        capture_output=True, text=True, timeout=seconds * 10 + 60, env=env,
    )  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(f"load generator failed against {deployment.targets}:\n{out.stderr[-3000:]}")
    result: dict[str, float] = json.loads(out.stdout)
    decisions = max(1, result["decisions"])
    for role, pids in deployment.roles.items():
        result[f"cpu_us_per_decision_{role}"] = (sum(cpu_seconds(p) for p in pids) - before[role]) / decisions * 1e6
    result["cpu_us_per_decision"] = sum(result[f"cpu_us_per_decision_{role}"] for role in deployment.roles)
    result["client_cpu_us_per_decision"] = (children_cpu() - client_before) / decisions * 1e6
    return result


def run_interleaved(
    deployments: dict[str, Deployment], configs: Sequence[tuple[str, int]], seconds: float, repeats: int
) -> dict[str, dict[str, list[dict[str, float]]]]:
    runs: dict[str, dict[str, list[dict[str, float]]]] = {name: {} for name in deployments}
    for deployment in deployments.values():  # warm up: models, caches, connections
        load(deployment, "closed", 32, 2.0)
    for r in range(repeats):
        for mode, n in configs:
            for name, deployment in deployments.items():
                run = load(deployment, mode, n, seconds)
                runs[name].setdefault(f"{mode} {n}", []).append(run)
                print(f"repeat {r + 1} {mode:6} {n:5} {name:16} {run['decisions_per_s']:8.0f}/s "
                      f"p99 {run['p99_ms']:7.2f} ms  cpu {run['cpu_us_per_decision']:5.0f} µs", flush=True)  # fmt: skip
    return runs


@contextlib.contextmanager
def transport_floor_and_tailor(catalogs: Path, data: Path) -> Iterator[dict[str, Deployment]]:
    echo, echo_vw = EchoProcess(), EchoProcess(vw=True)
    tailor = ServeProcess(catalogs, data).start()
    assert tailor.proc is not None
    try:
        yield {
            "echo": Deployment([echo.target], {"serve": [echo.proc.pid]}),
            "echo+VW": Deployment([echo_vw.target], {"serve": [echo_vw.proc.pid]}),
            "tailor": Deployment([tailor.target], {"serve": [tailor.proc.pid]}),
        }
    finally:
        echo.stop()
        echo_vw.stop()
        tailor.stop()


@contextlib.contextmanager
def process_deployments(catalogs: Path, tmp: Path) -> Iterator[dict[str, Deployment]]:
    """1 and 2 echo processes; Tailor in Redis mode with 1 and 2 replicas (each with a learner and Redis)."""
    stack = contextlib.ExitStack()
    with stack:
        deployments: dict[str, Deployment] = {}
        for count in (1, 2):
            echoes = [EchoProcess() for _ in range(count)]
            for e in echoes:
                stack.callback(e.stop)
            deployments[f"echo x{count}"] = Deployment(
                [e.target for e in echoes], {"serve": [e.proc.pid for e in echoes]}
            )
        floor_redis = RedisProcess().start()  # the Redis floor: echo plus a replica's Redis round trips
        stack.callback(floor_redis.stop)
        floor = EchoProcess(redis_url=floor_redis.url)
        stack.callback(floor.stop)
        assert floor_redis.proc is not None
        deployments["echo+redis x1"] = Deployment(
            [floor.target], {"serve": [floor.proc.pid], "redis": [floor_redis.proc.pid]}
        )
        for count in (1, 2):
            redis = RedisProcess().start()
            stack.callback(redis.stop)
            prefix = f"load-{uuid.uuid4().hex[:8]}"
            args = ["--redis-url", redis.url, "--redis-prefix", prefix]
            learner = LearnProcess(catalogs, redis.url, prefix, tmp / f"learn-{count}.log").start()
            stack.callback(learner.stop)
            replicas = []
            for i in range(count):
                replica = ServeProcess(catalogs, tmp / f"data-{count}-{i}", args).start()
                stack.callback(replica.stop)
                replicas.append(replica)
            assert learner.proc is not None and redis.proc is not None
            roles = {
                "serve": [r.proc.pid for r in replicas if r.proc],
                "learn": [learner.proc.pid],
                "redis": [redis.proc.pid],
            }
            deployments[f"tailor redis x{count}"] = Deployment([r.target for r in replicas], roles)
        yield deployments


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="per run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-processes", action="store_true", help="skip the 1-vs-2 serving processes runs")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tailor-load-") as tmp:
        catalogs = Path(tmp) / "catalogs"
        catalogs.mkdir()
        write_catalog(catalogs)
        with transport_floor_and_tailor(catalogs, Path(tmp) / "data") as deployments:
            runs = run_interleaved(deployments, CONFIGS, args.seconds, args.repeats)
            rss = {name: resident_mb(d.pids[0], peak=True) for name, d in deployments.items()}
        process_runs: dict[str, dict[str, list[dict[str, float]]]] = {}
        if not args.no_processes:
            with process_deployments(catalogs, Path(tmp)) as deployments:
                process_runs = run_interleaved(deployments, PROCESS_CONFIGS, args.seconds, args.repeats)

    def medians(r: dict[str, dict[str, list[dict[str, float]]]]) -> dict[str, dict[str, dict[str, float]]]:
        return {name: {config: median(results) for config, results in c.items()} for name, c in r.items()}

    command = ".venv/bin/python -m benchmarks.load" + (" --no-processes" if args.no_processes else "")
    result: dict[str, Any] = {
        "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": command,
        "seconds": args.seconds,
        "repeats": args.repeats,
        "medians": medians(runs),
        "process_medians": medians(process_runs),
        "peak_rss_mb": rss,
        "runs": runs,
        "process_runs": process_runs,
    }
    publish(args.out, result, report(result))
    return 0


def report(r: dict[str, Any]) -> str:
    m = r["medians"]
    echo, vw, tailor = m["echo"], m["echo+VW"], m["tailor"]
    lines = [
        f"Measured {r['when']}; {r['repeats']} interleaved repeats of {r['seconds']:g} s per configuration, "
        f"medians. Command: `{r['command']}`.",
        "",
        "**Tailor against the echo server** (the performance targets):",
        "",
        "| load | decisions/s (x echo) | p50 ms (x echo) | p90 ms (x echo) | p99 ms (x echo) | events/s | rewards/s "
        "| server CPU µs/decision (x echo) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for config in echo:
        e, t = echo[config], tailor[config]

        def cell(metric: str, fmt: str = ".2f") -> str:
            return f"{t[metric]:{fmt}} ({t[metric] / e[metric]:.2f}x)"  # noqa: B023

        lines.append(
            f"| {config} | {cell('decisions_per_s', '.0f')} | {cell('p50_ms')} | {cell('p90_ms')} | {cell('p99_ms')} "
            f"| {t['events_per_s']:.0f} | {t['rewards_per_s']:.0f} | {cell('cpu_us_per_decision', '.0f')} |"
        )
    lines += [
        "",
        "**The three servers side by side**: echo+VW is echo plus raw VW predict and learn per decision, the "
        "ceiling for deciding and learning in the serving process; the last column is Tailor's own overhead "
        "over that ceiling.",
        "",
        "| load | echo /s | echo+VW /s (x echo) | Tailor /s (x echo+VW) | server CPU µs/decision: echo / echo+VW / "
        "Tailor | load generator CPU µs/decision | p99 ms: echo / echo+VW / Tailor |",
        "|---|---|---|---|---|---|---|",
    ]
    for config in echo:
        e, v, t = echo[config], vw[config], tailor[config]
        lines.append(
            f"| {config} | {e['decisions_per_s']:.0f} | {v['decisions_per_s']:.0f} "
            f"({v['decisions_per_s'] / e['decisions_per_s']:.2f}x) | {t['decisions_per_s']:.0f} "
            f"({t['decisions_per_s'] / v['decisions_per_s']:.2f}x) | {e['cpu_us_per_decision']:.0f} / "
            f"{v['cpu_us_per_decision']:.0f} / {t['cpu_us_per_decision']:.0f} | {t['client_cpu_us_per_decision']:.0f} "
            f"| {e['p99_ms']:.2f} / {v['p99_ms']:.2f} / {t['p99_ms']:.2f} |"
        )
    rss = r["peak_rss_mb"]
    lines += [
        "",
        f"Peak RSS: Tailor {rss['tailor']:.0f} MB, echo+VW {rss['echo+VW']:.0f} MB, echo {rss['echo']:.0f} MB.",
    ]
    p = r["process_medians"]
    if p:
        lines += [
            "",
            "**Serving processes** (closed loop, shoppers spread over the processes; Tailor in Redis mode, CPU of "
            "every server-side process: replicas, `tailor learn`, redis-server; echo+redis is the Redis floor: echo "
            "plus a replica's pipelined Redis round trips with payloads of their size, and nothing else):",
            "",
            "| load | deployment | decisions/s (x 1 process) | p99 ms | server CPU µs/decision (serving / learner / "
            "Redis) |",
            "|---|---|---|---|---|",
        ]
        for config in PROCESS_CONFIGS:
            key = f"{config[0]} {config[1]}"
            for kind in ("echo", "echo+redis", "tailor redis"):
                one = p[f"{kind} x1"][key]["decisions_per_s"]
                for count in (1, 2):
                    if f"{kind} x{count}" not in p:
                        continue
                    run = p[f"{kind} x{count}"][key]
                    rate = run["decisions_per_s"]
                    parts = " / ".join(f"{run[f'cpu_us_per_decision_{r}']:.0f}" for r in ("serve", "learn", "redis")
                                       if f"cpu_us_per_decision_{r}" in run)  # fmt: skip
                    lines.append(
                        f"| {key} | {kind} x{count} | {rate:.0f} ({rate / one:.2f}x) "
                        f"| {run['p99_ms']:.2f} | {run['cpu_us_per_decision']:.0f} ({parts}) |"
                    )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
