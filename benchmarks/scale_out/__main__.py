"""Scale-out benchmark: 2 replicas + `tailor learn` + Redis against the embedded default, in one run.

    .venv/bin/python -m benchmarks.scale_out [--shoppers 30000] [--seed 1] [--redis-cluster]

1. Embedded: one `tailor serve`, `tailor simulate --target` against it.
2. Cluster (`tailor cluster` machinery): a private redis-server, 2 replicas, the learner; the same
   shoppers spread over both replicas (each outcome arrives at the other replica); the learner is
   killed with SIGKILL midway and a new one started.
Then: every decision whose window closed was handed to the learner exactly once and is covered by the
published models; both replicas serve the same model version; the learning curve after the warm-up
against the embedded one (difference and the noise between blocks); Redis round trips and CPU per
decision against the embedded default, and what that projects for more replicas and cores.
Writes results.json and results.md beside this file (or --out).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from benchmarks._results import publish
from server.tools.cluster import run_cluster, simulate_command
from server.tools.launcher import ServeProcess, cpu_seconds, metric_sum
from server.tools.simulator import DEFAULT_DECISION_POINT, REWARD_WINDOW_SECONDS, catalog_document

HERE = Path(__file__).resolve().parent


def embedded(shoppers: int, seed: int, out: Path) -> dict[str, Any]:
    """The embedded default under the same simulation; CPU of the one server process."""
    with tempfile.TemporaryDirectory(prefix="tailor-scale-embedded-") as tmp:
        catalogs = Path(tmp) / "catalogs"
        catalogs.mkdir()
        (catalogs / f"{DEFAULT_DECISION_POINT}.yaml").write_text(yaml.safe_dump(catalog_document()))
        with ServeProcess(catalogs, Path(tmp) / "data") as server:
            started = time.monotonic()
            code = subprocess.run(simulate_command(server.target, shoppers, seed, out), check=False).returncode
            seconds = time.monotonic() - started
            deadline = time.monotonic() + REWARD_WINDOW_SECONDS + 15
            while (
                metric_sum(server.metrics(), "tailor_learned_examples_total") < shoppers and time.monotonic() < deadline
            ):
                time.sleep(0.2)
            assert server.proc is not None
            cpu = cpu_seconds(server.proc.pid)
            decisions = metric_sum(server.metrics(), "tailor_decisions_total")
        return {"simulate_exit": code, "seconds": seconds, "cpu_seconds": cpu, "decisions": decisions}


def after_warmup(results: dict[str, Any]) -> tuple[float, list[float]]:
    """Mean expected conversion after the warm-up, and the per-block values it is made of."""
    warmup = results["config"]["warmup"]
    blocks = [b["means"]["service"] for b in results["blocks"] if b["start"] >= warmup]
    return results["after_warmup"]["service"], blocks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shoppers", type=int, default=30_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--out", type=Path, default=None, help="default: beside this file (cluster/ with --redis-cluster)"
    )
    parser.add_argument(
        "--redis-cluster", action="store_true", help="on a private Redis Cluster (3 primaries, a replica each)"
    )
    args = parser.parse_args()
    out = args.out or (HERE / "cluster" if args.redis_cluster else HERE)
    work = Path(tempfile.mkdtemp(prefix="tailor-scale-"))

    print("== embedded default", flush=True)
    emb = embedded(args.shoppers, args.seed, work / "embedded")
    redis = "a Redis Cluster (3 primaries + 3 replicas)" if args.redis_cluster else "redis"
    print(f"== cluster: {redis} + 2 replicas + learner (killed midway)", flush=True)
    cluster = run_cluster(
        2, None, args.shoppers, args.seed, emb["seconds"] * 0.6, work / "cluster", redis_cluster=args.redis_cluster
    )

    emb_mean, emb_blocks = after_warmup(json.loads((work / "embedded" / "results.json").read_text()))
    cl_mean, cl_blocks = after_warmup(json.loads((work / "cluster" / "results.json").read_text()))
    # noise: the standard error of a post-warm-up mean, from the spread between blocks of both runs
    spread = statistics.pstdev(emb_blocks + cl_blocks) if len(emb_blocks + cl_blocks) > 1 else 0.0
    noise = 2 * spread * math.sqrt(1 / len(emb_blocks) + 1 / len(cl_blocks))
    emb_us = emb["cpu_seconds"] / emb["decisions"] * 1e6
    cpu = cluster["cpu_seconds"]
    cl_total = cpu["replicas"] + cpu["learner"] + cpu["redis"]
    cl_us = cl_total / cluster["decisions"] * 1e6
    replica_us = cpu["replicas"] / cluster["decisions"] * 1e6
    checks = {
        "exactly once": cluster["handed_to_learner"] == cluster["logged"] and cluster["uncovered"] == 0,
        "same model version on both replicas": len(set(cluster["versions"])) == 1,
        "learner killed midway": cluster["learner_killed"],
        "learning curve within noise": abs(cl_mean - emb_mean) <= noise,
    }
    result = {
        "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": ".venv/bin/python -m benchmarks.scale_out" + (" --redis-cluster" if args.redis_cluster else ""),
        "shoppers": args.shoppers,
        "seed": args.seed,
        "embedded": emb | {"after_warmup_conversion": emb_mean, "cpu_us_per_decision": emb_us},
        "cluster": {k: v for k, v in cluster.items() if k != "lines"}
        | {"after_warmup_conversion": cl_mean, "cpu_us_per_decision": cl_us, "replica_cpu_us_per_decision": replica_us},
        "noise_band": noise,
        "checks": checks,
        "passed": all(checks.values()),
    }
    table = report(result)
    publish(out, result, table)
    return 0 if result["passed"] else 1


def report(r: dict[str, Any]) -> str:
    e, c = r["embedded"], r["cluster"]
    cpu = c["cpu_seconds"]
    ratio = c["cpu_us_per_decision"] / e["cpu_us_per_decision"]
    rows = [
        f"Measured {r['when']}: {r['shoppers']} shoppers, seed {r['seed']}. Command: `{r['command']}`.",
        "",
        "| | embedded default | Redis cluster (2 replicas + learner) | ratio |",
        "|---|---|---|---|",
        f"| conversion after warm-up (expected) | {e['after_warmup_conversion']:.4f} | "
        f"{c['after_warmup_conversion']:.4f} | {c['after_warmup_conversion'] / e['after_warmup_conversion']:.3f} "
        f"(noise band ±{r['noise_band']:.4f}) |",
        f"| decisions | {e['decisions']:.0f} | {c['decisions']:.0f}, "
        f"handed to the learner {c['handed_to_learner']} | |",
        f"| Redis round trips per decision | 0 | {c['round_trips_per_decision']:.2f} | |",
        f"| CPU µs per decision, all processes | {e['cpu_us_per_decision']:.0f} | {c['cpu_us_per_decision']:.0f} "
        f"(replicas {cpu['replicas']:.1f} s, learner {cpu['learner']:.1f} s, redis {cpu['redis']:.1f} s) | "
        f"{ratio:.2f}x |",
        f"| CPU µs per decision, serving replicas only | {e['cpu_us_per_decision']:.0f} | "
        f"{c['replica_cpu_us_per_decision']:.0f} | "
        f"{c['replica_cpu_us_per_decision'] / e['cpu_us_per_decision']:.2f}x |",
        f"| model version on the replicas | | {[int(v) for v in c['versions']]} | |",
        "",
        *(f"- {name}: {'ok' if ok else 'FAIL'}" for name, ok in r["checks"].items()),
        "",
        "**PASS**" if r["passed"] else "**FAIL**",
    ]
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
