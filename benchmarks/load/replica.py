"""What a Redis-mode replica costs against the embedded server, beside the Redis floor, in one run.

    .venv/bin/python -m benchmarks.load.replica [--against REV] [--seconds 5] [--repeats 5]

Deployments, all on the load benchmark's traffic at 32 shoppers in flight, runs interleaved, medians:

- `embedded`: this checkout's `tailor serve` on the embedded default (decision log and console on, as shipped);
- `replica`: this checkout's `tailor serve --redis-url` with `tailor learn`, on a private redis-server;
- `floor`: the echo server plus a replica's Redis round trips with payloads of their size, through the same
  client path (`benchmarks/load/_echo.py`): what Redis itself costs a replica;
- `echo`: the transport floor;
- with `--against REV`: REV's replica and learner (a git worktree, this checkout's virtualenv), on their own
  redis-server, to show what a change did to the replica.

The figure is serving CPU per decision (the replica process's, from /proc), replica / embedded; the target
of issue 16 is at most 1.3x. Writes replica.json and replica.md beside this file (or into --out).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from server.tools.launcher import RedisProcess, ServeProcess, free_port

from .__main__ import Deployment, EchoProcess, run_interleaved
from ._traffic import write_catalog

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
SHOWN = ("decisions_per_s", "p99_ms", "cpu_us_per_decision", "cpu_us_per_decision_serve")


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], check=True, capture_output=True, text=True).stdout.strip()


def redis_replica(
    stack: contextlib.ExitStack, catalogs: Path, tmp: Path, name: str, cwd: Path | None = None
) -> Deployment:
    """A redis-server, `tailor learn` and one `tailor serve --redis-url` (from `cwd`'s code when given)."""
    redis = RedisProcess().start()
    stack.callback(redis.stop)
    prefix = f"{name}-{uuid.uuid4().hex[:6]}"
    learn_log = (tmp / f"learn-{name}.log").open("wb")
    stack.callback(learn_log.close)
    learner = subprocess.Popen(
        [sys.executable, "-m", "server", "learn", "--catalogs", str(catalogs), "--redis-url", redis.url,
         "--redis-prefix", prefix, "--metrics-port", str(free_port())],
        cwd=cwd, stdout=learn_log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    stack.callback(learner.wait, 30)
    stack.callback(learner.terminate)
    replica = ServeProcess(catalogs, tmp / f"data-{name}", ["--redis-url", redis.url, "--redis-prefix", prefix])
    with replica.log_path.open("wb") as log:
        replica.proc = subprocess.Popen(replica.args, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
    stack.callback(replica.stop)
    replica.wait_serving()
    assert replica.proc is not None and redis.proc is not None
    return Deployment(
        [replica.target], {"serve": [replica.proc.pid], "learn": [learner.pid], "redis": [redis.proc.pid]}
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--against", help="also run this git revision's replica (a commit, tag or branch)")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    now = git("rev-parse", "--short", "HEAD") + (
        "+changes" if git("status", "--porcelain", "--untracked-files=no") else ""
    )
    then = git("rev-parse", "--short", args.against) if args.against else None
    with tempfile.TemporaryDirectory(prefix="tailor-replica-") as tmp_name, contextlib.ExitStack() as stack:
        tmp = Path(tmp_name)
        catalogs = tmp / "catalogs"
        catalogs.mkdir()
        write_catalog(catalogs)
        echo = EchoProcess()
        stack.callback(echo.stop)
        floor_redis = RedisProcess().start()
        stack.callback(floor_redis.stop)
        floor = EchoProcess(redis_url=floor_redis.url)
        stack.callback(floor.stop)
        embedded = ServeProcess(catalogs, tmp / "data-embedded").start()
        stack.callback(embedded.stop)
        assert embedded.proc is not None and floor_redis.proc is not None
        deployments = {
            "echo": Deployment([echo.target], {"serve": [echo.proc.pid]}),
            "floor": Deployment([floor.target], {"serve": [floor.proc.pid], "redis": [floor_redis.proc.pid]}),
            "embedded": Deployment([embedded.target], {"serve": [embedded.proc.pid]}),
            "replica": redis_replica(stack, catalogs, tmp, "now"),
        }
        if then is not None:
            worktree = tmp / "rev"
            git("worktree", "add", "--detach", str(worktree), then)
            stack.callback(git, "worktree", "remove", "--force", str(worktree))
            deployments[f"replica at {then}"] = redis_replica(stack, catalogs, tmp, "then", cwd=worktree)
        runs = run_interleaved(deployments, [("closed", 32)], args.seconds, args.repeats)
    medians = {name: {m: statistics.median(r[m] for r in c["closed 32"]) for m in SHOWN} for name, c in runs.items()}
    serve = {name: m["cpu_us_per_decision_serve"] for name, m in medians.items()}
    ratio = serve["replica"] / serve["embedded"]
    result: dict[str, Any] = {
        "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": ".venv/bin/python -m benchmarks.load.replica"
        + (f" --against {args.against}" if args.against else "")
        + f" --seconds {args.seconds:g} --repeats {args.repeats}",
        "revisions": {"now": now, "then": then},
        "medians": medians,
        "replica_over_embedded": ratio,
        "target": 1.3,
        "passed": ratio <= 1.3,
        "runs": runs,
    }
    rows = [
        f"| {name} | {m['decisions_per_s']:,.0f} | {m['p99_ms']:.1f} | {m['cpu_us_per_decision_serve']:,.0f} | "
        f"{m['cpu_us_per_decision_serve'] / serve['embedded']:.2f}x | {m['cpu_us_per_decision']:,.0f} |"
        for name, m in medians.items()
    ]
    table = "\n".join(
        [
            f"Measured {result['when']} at {now}: `{result['command']}`; closed loop, 32 shoppers in flight, "
            f"{args.repeats} interleaved repeats of {args.seconds:g} s, medians.",
            "",
            "| deployment | decisions/s | p99 ms | serving CPU µs/decision | x embedded "
            "| all its processes µs/decision |",
            "|---|---|---|---|---|---|",
            *rows,
            "",
            f"Replica / embedded serving CPU: **{ratio:.2f}x** (target ≤ 1.3x): {'PASS' if ratio <= 1.3 else 'MISS'}.",
            "",
        ]
    )
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "replica.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "replica.md").write_text(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
