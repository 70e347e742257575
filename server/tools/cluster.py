"""`tailor cluster`: a local Redis-mode deployment for developers and demos, driven by the simulator.

One command starts Redis (a private `redis-server` unless `--redis-url` is given), N `tailor serve`
replicas and `tailor learn`, runs `tailor simulate` spread over the replicas (each shopper's outcome
arrives at another replica than the decision was made on), optionally kills the learner with SIGKILL
midway and starts a new one, and then checks what the scale-out design promises: every decision whose
window closed was handed to the learner exactly once and is covered by the published models, and every
replica serves the same latest model version.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import redis
import yaml

from server.tools.simulator import (
    DEFAULT_DECISION_POINT,
    REWARD_WINDOW_SECONDS,
    catalog_document,
    missing_plot_extra,
)

from .launcher import LearnProcess, RedisClusterProcess, RedisProcess, ServeProcess, cpu_seconds, metric_sum


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__
    parser.add_argument("--replicas", type=int, default=2, help="tailor serve replicas (default 2)")
    parser.add_argument("--redis-url", help="use this Redis instead of starting a private redis-server")
    parser.add_argument(
        "--redis-cluster",
        action="store_true",
        help="on a Redis Cluster: a private one of 3 primaries with a replica each, or the one --redis-url names",
    )
    parser.add_argument("--shoppers", type=int, default=30_000, help="simulated shoppers (default 30000)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the shopper population")
    parser.add_argument(
        "--kill-learner-after", type=float, default=0.0, metavar="SECONDS",
        help="kill -9 the learner this long into the simulation and start a new one (default: never)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, help="where the simulator's results and cluster.json go (default: temp)")


def _client(url: str, cluster: bool) -> redis.Redis:
    if cluster:
        return redis.RedisCluster.from_url(url, decode_responses=True)  # type: ignore[return-value]
    return redis.Redis.from_url(url, decode_responses=True)


def _streams(url: str, prefix: str, cluster: bool) -> tuple[int, int]:
    """(entries ever handed to the learner, entries not yet covered by the published models)."""
    client = _client(url, cluster)  # a cluster client's SCAN covers every primary
    try:
        offsets = client.hgetall(f"{prefix}:{{m}}:offsets")
        added = uncovered = 0
        for key in client.scan_iter(f"{prefix}:*:learn:*"):
            info = client.xinfo_stream(key)
            added += int(info["entries-added"])
            after = str(offsets.get(key, "0"))
            pending: Any = client.xrange(key, min=f"({after}" if after != "0" else "-")
            uncovered += len(pending)
        return added, uncovered
    finally:
        client.close()


def run(args: argparse.Namespace) -> int:
    if args.replicas < 1 or args.shoppers < 1:
        print("tailor cluster: --replicas and --shoppers must be at least 1", file=sys.stderr)
        return 2
    missing = missing_plot_extra()
    if missing:
        print(f"tailor cluster: {missing}", file=sys.stderr)
        return 2
    try:
        report = run_cluster(
            args.replicas,
            args.redis_url,
            args.shoppers,
            args.seed,
            args.kill_learner_after,
            args.out,
            args.redis_cluster,
        )
    except (RuntimeError, OSError) as err:
        print(f"tailor cluster: cannot run the cluster: {err}", file=sys.stderr)
        return 2
    for line in report["lines"]:
        print(line)
    print(f"wrote {report['out']}/cluster.json")
    return 0 if report["passed"] and report["simulate_exit"] == 0 else 1


def run_cluster(
    replicas: int,
    redis_url: str | None,
    shoppers: int,
    seed: int,
    kill_after: float,
    out: Path | None,
    redis_cluster: bool = False,
) -> dict[str, Any]:
    """Start the cluster, simulate, check; returns the report (also written to OUT/cluster.json)."""
    work = Path(tempfile.mkdtemp(prefix="tailor-cluster-"))
    out = out or work / "results"
    prefix = f"cluster-{uuid.uuid4().hex[:8]}"
    with contextlib.ExitStack() as stack:
        url = redis_url
        private: RedisProcess | RedisClusterProcess | None = None
        if url is None:
            private = RedisClusterProcess().start() if redis_cluster else RedisProcess().start()
            stack.callback(private.stop)
            url = private.url
        flags = ("--redis-cluster",) if redis_cluster else ()
        catalogs = work / "catalogs"
        catalogs.mkdir()
        (catalogs / f"{DEFAULT_DECISION_POINT}.yaml").write_text(yaml.safe_dump(catalog_document()))
        servers = []
        for i in range(replicas):
            extra = ("--redis-url", url, "--redis-prefix", prefix, *flags)
            replica = ServeProcess(catalogs, work / f"replica-{i}", extra, log=work / f"replica-{i}.log").start()
            stack.callback(replica.stop)
            servers.append(replica)
        learners = [LearnProcess(catalogs, url, prefix, work / "learn-0.log", flags).start()]
        stack.callback(lambda: [learner.stop() for learner in learners])
        targets = ",".join(r.target for r in servers)
        print(f"redis {url} (prefix {prefix}); replicas {targets}; learner metrics :{learners[0].metrics_port}")
        started = time.monotonic()
        sim = subprocess.Popen(simulate_command(targets, shoppers, seed, out))
        learner_killed = False
        learner_cpu = 0.0
        if kill_after > 0:
            with contextlib.suppress(subprocess.TimeoutExpired):
                sim.wait(kill_after)
            if sim.poll() is None:
                learner_cpu += _cpu(learners[0])
                learners[0].kill()
                print(f"killed the learner (SIGKILL) at {time.monotonic() - started:.0f} s; starting a new one")
                learners.append(LearnProcess(catalogs, url, prefix, work / "learn-1.log", flags).start())
                learner_killed = True
        simulate_exit = sim.wait()
        report = _verify(url, prefix, servers, learners[-1], redis_cluster)
        cpu = {
            "replicas": sum(_cpu(r) for r in servers),
            "learner": learner_cpu + _cpu(learners[-1]),
            "redis": _redis_cpu(private),
        }
        report.update(
            learner_killed=learner_killed,
            simulate_exit=simulate_exit,
            replicas=replicas,
            redis_cluster=redis_cluster,
            shoppers=shoppers,
            seed=seed,
            cpu_seconds=cpu,
            out=str(out),
        )
        out.mkdir(parents=True, exist_ok=True)
        (out / "cluster.json").write_text(json.dumps(report, indent=2) + "\n")
        return report
    raise AssertionError("unreachable")


def simulate_command(targets: str, shoppers: int, seed: int, out: Path) -> list[str]:
    """`tailor simulate` against running servers, with a warm-up of a quarter of the shoppers."""
    return [
        sys.executable, "-m", "server", "simulate", "--target", targets, "--decision-point", DEFAULT_DECISION_POINT,
        "--shoppers", str(shoppers), "--seed", str(seed), "--out", str(out),
        "--warmup", str(shoppers // 4), "--block", str(max(1, shoppers // 20)),
    ]  # fmt: skip


def _cpu(process: ServeProcess | LearnProcess | RedisProcess | None) -> float:
    proc = process.proc if process is not None else None
    if proc is None or proc.poll() is not None:
        return 0.0
    return cpu_seconds(proc.pid)


def _redis_cpu(private: RedisProcess | RedisClusterProcess | None) -> float:
    """CPU seconds of the private Redis (every node of a private cluster); NaN for one we did not start."""
    if private is None:
        return float("nan")
    nodes = private.nodes if isinstance(private, RedisClusterProcess) else [private]
    return sum(_cpu(node) for node in nodes)


def _verify(
    url: str, prefix: str, replicas: list[ServeProcess], learner: LearnProcess, cluster: bool = False
) -> dict[str, Any]:
    """Wait for every window to close and the learner to publish, then check exactly-once and versions."""
    deadline = time.monotonic() + REWARD_WINDOW_SECONDS + 30
    texts = [r.metrics() for r in replicas]
    decisions = sum(metric_sum(t, "tailor_decisions_total") for t in texts)
    unlearnable = sum(metric_sum(t, "tailor_decisions_unlearnable_total") for t in texts)
    added, uncovered = _streams(url, prefix, cluster)
    while (added < decisions - unlearnable or uncovered) and time.monotonic() < deadline:
        time.sleep(0.5)
        added, uncovered = _streams(url, prefix, cluster)
    time.sleep(2.0)  # replicas poll for published models every 0.5 s
    texts = [r.metrics() for r in replicas]
    versions = [metric_sum(t, "tailor_model_version", decision_point=DEFAULT_DECISION_POINT) for t in texts]
    round_trips = sum(metric_sum(t, "tailor_redis_round_trips_total") for t in texts)
    once = added == decisions - unlearnable
    lines = [
        f"decisions served {decisions:.0f}, logged {decisions - unlearnable:.0f}; handed to the learner {added} "
        f"({'exactly once' if once else 'MISMATCH'}); not yet covered by a published model: {uncovered}",
        f"model version per replica: {[int(v) for v in versions]}"
        f" ({'the same' if len(set(versions)) == 1 else 'DIFFERENT'})",
        f"Redis round trips per decision on the replicas: {round_trips / max(1.0, decisions):.2f}",
        f"learner learned {learner.sample('tailor_learned_examples_total'):.0f} since its start",
    ]
    return {
        "decisions": decisions,
        "logged": decisions - unlearnable,
        "handed_to_learner": added,
        "uncovered": uncovered,
        "versions": versions,
        "round_trips_per_decision": round_trips / max(1.0, decisions),
        "passed": once and uncovered == 0 and len(set(versions)) == 1,
        "lines": lines,
    }
