"""Tailor at another git revision against Tailor now, under the load benchmark's traffic, in one run.

    .venv/bin/python -m benchmarks.load.against REV [--seconds 5] [--repeats 3]

Checks REV out into a temporary git worktree and starts its `tailor serve` (with this checkout's
virtualenv: the dependencies must still fit) beside this checkout's and the echo server, then runs
closed loop at 32 in flight and open loop at 500 and 1,000 decisions/s against all three, interleaved.
Prints the two revisions' figures with their ratios to echo, and writes against.json and against.md
beside this file (or into --out).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from server.tools.launcher import ServeProcess, free_port

from .__main__ import Deployment, EchoProcess, run_interleaved
from ._traffic import write_catalog

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
CONFIGS = (("closed", 32), ("open", 500), ("open", 1000))
SHOWN = ("decisions_per_s", "p99_ms", "cpu_us_per_decision")


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], check=True, capture_output=True, text=True).stdout.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rev", help="the git revision to compare against (a commit, tag or branch)")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--loads",
        default=",".join(f"{kind}:{n}" for kind, n in CONFIGS),
        help="comma-separated closed:IN_FLIGHT / open:RATE (default %(default)s); drop open:1000 on a machine "
        "too slow to serve it, where gRPC refuses the excess and the load generator stops",
    )
    parser.add_argument(
        "--console",
        action="store_true",
        help="this checkout serves its web console (on a free port, nobody looking), as `tailor serve` does by default",
    )
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    configs = tuple((kind, int(n)) for kind, n in (load.split(":") for load in args.loads.split(",")))
    then, now = git("rev-parse", "--short", args.rev), git("rev-parse", "--short", "HEAD")
    if git("status", "--porcelain", "--untracked-files=no"):
        now += "+changes"  # this checkout's server runs the working tree, uncommitted changes included
    with tempfile.TemporaryDirectory(prefix="tailor-against-") as tmp:
        worktree = Path(tmp) / "rev"
        git("worktree", "add", "--detach", str(worktree), then)
        try:
            catalogs = Path(tmp) / "catalogs"
            catalogs.mkdir()
            write_catalog(catalogs)
            echo = EchoProcess()
            console = ["--console-port", str(free_port())] if args.console else []
            current = ServeProcess(catalogs, Path(tmp) / "data-now", console).start()
            old = ServeProcess(catalogs, Path(tmp) / "data-then", cwd=worktree)
            old.args = _without_console(old.args)  # a revision from before the console knows no --console-port
            try:
                old.start()
                assert echo.proc and current.proc and old.proc
                deployments = {
                    "echo": Deployment([echo.target], {"serve": [echo.proc.pid]}),
                    then: Deployment([old.target], {"serve": [old.proc.pid]}),
                    now: Deployment([current.target], {"serve": [current.proc.pid]}),
                }
                runs = run_interleaved(deployments, configs, args.seconds, args.repeats)
            finally:
                echo.stop()
                current.stop()
                old.stop()
        finally:
            git("worktree", "remove", "--force", str(worktree))
    medians = {
        name: {config: {m: statistics.median(r[m] for r in results) for m in SHOWN} for config, results in c.items()}
        for name, c in runs.items()
    }
    result: dict[str, Any] = {
        "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": f".venv/bin/python -m benchmarks.load.against {args.rev} --loads {args.loads}"
        + (" --console" if args.console else ""),
        "revisions": {"then": then, "now": now},
        "medians": medians,
        "runs": runs,
    }
    table = report(result)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "against.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "against.md").write_text(table)
    return 0


def _without_console(args: list[str]) -> list[str]:
    if "--console-port" not in args:
        return args
    i = args.index("--console-port")
    return args[:i] + args[i + 2 :]


def report(r: dict[str, Any]) -> str:
    then, now = r["revisions"]["then"], r["revisions"]["now"]
    m = r["medians"]
    lines = [
        f"Measured {r['when']}: `tailor serve` at {then} and at {now} beside the echo server, the load benchmark's "
        f"traffic, medians of interleaved repeats. Command: `{r['command']}`.",
        "",
        f"| load | measure | echo | {then} (x echo) | {now} (x echo) |",
        "|---|---|---|---|---|",
    ]
    for config in m["echo"]:
        for metric, label, fmt in (
            ("decisions_per_s", "decisions/s", ".0f"),
            ("p99_ms", "p99 ms", ".2f"),
            ("cpu_us_per_decision", "server CPU µs/decision", ".0f"),
        ):
            e = m["echo"][config][metric]
            cells = [f"{m[rev][config][metric]:{fmt}} ({m[rev][config][metric] / e:.2f}x)" for rev in (then, now)]
            lines.append(f"| {config} | {label} | {e:{fmt}} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
