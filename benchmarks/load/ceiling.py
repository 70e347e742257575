"""Tailor against the echo+VW ceiling, as a production deployment runs it, in one run.

    .venv/bin/python -m benchmarks.load.ceiling [--seconds 5] [--repeats 3] [--against REV]

echo+VW (`_echo.py`: the transport plus raw VW predict and one learn per decision, the most any service
deciding and learning with VW in its serving process can reach here), the contract floor (`ContractFloor`
in `_echo.py`: echo+VW plus the least any implementation of the contract must do per call, as cheaply as
Python allows: key check, context to VW tokens, a session feature, ranked response, reward join, a durable
log record) and `tailor serve` on the embedded default with API keys (`--api-keys`, 20 entries, the key
sought last) and its decision log, as production runs it, get the load benchmark's traffic at 32 shoppers
in flight, interleaved (echo+VW, floor, Tailor, echo+VW, ...). With --against REV, `tailor serve` at REV
(a temporary git worktree) runs beside them.

The figure is the median over repeats of Tailor's decisions/s over echo+VW's in the same repeat (target:
at least 0.9x). Writes ceiling.json and ceiling.md beside this file (or into --out).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from server.tools.launcher import ServeProcess

from .__main__ import Deployment, EchoProcess, run_interleaved
from ._traffic import write_catalog
from .against import git
from .auth import write_keys

HERE = Path(__file__).resolve().parent
TARGET = 0.9
CONFIG = ("closed", 32)
SHOWN = ("decisions_per_s", "p99_ms", "cpu_us_per_decision")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--against", metavar="REV", help="also `tailor serve` at this git revision")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    now = git("rev-parse", "--short", "HEAD")
    if git("status", "--porcelain", "--untracked-files=no"):
        now += "+changes"  # this checkout's server runs the working tree, uncommitted changes included
    with tempfile.TemporaryDirectory(prefix="tailor-ceiling-") as tmp, contextlib.ExitStack() as stack:
        catalogs = Path(tmp) / "catalogs"
        catalogs.mkdir()
        write_catalog(catalogs)
        key = write_keys(Path(tmp) / "keys.yaml", 20)
        keys = ["--api-keys", str(Path(tmp) / "keys.yaml")]
        echo_vw = EchoProcess(vw=True)
        stack.callback(echo_vw.stop)
        floor = EchoProcess(contract_keys=Path(tmp) / "keys.yaml")
        stack.callback(floor.stop)
        servers = {f"tailor {now}": ServeProcess(catalogs, Path(tmp) / "data", keys)}
        if args.against:
            rev = git("rev-parse", "--short", args.against)
            tree = Path(tmp) / "against"
            git("worktree", "add", "--detach", str(tree), rev)
            stack.callback(git, "worktree", "remove", "--force", str(tree))
            servers[f"tailor {rev}"] = ServeProcess(catalogs, Path(tmp) / "data-against", keys, cwd=tree)
        for server in servers.values():
            server.start()
            stack.callback(server.stop)
        deployments = {
            "echo+VW": Deployment([echo_vw.target], {"serve": [echo_vw.proc.pid]}),
            "contract floor": Deployment([floor.target], {"serve": [floor.proc.pid]}, api_key=key),
        }
        for name, server in servers.items():
            assert server.proc is not None
            deployments[name] = Deployment([server.target], {"serve": [server.proc.pid]}, api_key=key)
        runs = run_interleaved(deployments, [CONFIG], args.seconds, args.repeats)
    config = f"{CONFIG[0]} {CONFIG[1]}"
    ceiling = runs["echo+VW"][config]
    result: dict[str, Any] = {
        "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": ".venv/bin/python -m benchmarks.load.ceiling"
        + (f" --against {args.against}" if args.against else ""),
        "seconds": args.seconds,
        "repeats": args.repeats,
        "target": TARGET,
        "medians": {name: {m: statistics.median(r[m] for r in c[config]) for m in SHOWN} for name, c in runs.items()},
        "ratio_to_ceiling": {
            name: statistics.median(
                t["decisions_per_s"] / v["decisions_per_s"] for t, v in zip(c[config], ceiling, strict=True)
            )
            for name, c in runs.items()
            if name != "echo+VW"
        },
        "runs": runs,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ceiling.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "ceiling.md").write_text(report(result))
    print(report(result))
    return 0


def report(r: dict[str, Any]) -> str:
    lines = [
        "# Tailor against the echo+VW ceiling",
        "",
        f"Measured {r['when']}: closed loop at 32 in flight, {r['repeats']} interleaved repeats of {r['seconds']:g} s; "
        f"Tailor on the embedded default with API keys (20 in the file, the one used last) and its decision log. "
        f"Command: `{r['command']}`.",
        "",
        "| server | decisions/s | p99 ms | server CPU µs/decision | x echo+VW (median of per-repeat ratios) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, m in r["medians"].items():
        ratio = f"{r['ratio_to_ceiling'][name]:.3f}x" if name in r["ratio_to_ceiling"] else ""
        lines.append(
            f"| {name} | {m['decisions_per_s']:.0f} | {m['p99_ms']:.2f} | {m['cpu_us_per_decision']:.0f} | {ratio} |"
        )
    now = next(n for n in r["ratio_to_ceiling"] if n.startswith("tailor "))  # this checkout's; others: --against's
    ratio = r["ratio_to_ceiling"][now]
    verdict = "met" if ratio >= r["target"] else "missed"
    floor = r["ratio_to_ceiling"]["contract floor"]
    lines += [
        "",
        f"{now}: {ratio:.3f}x echo+VW against the target of at least {r['target']:.2f}x: {verdict}. The contract "
        f"floor (the least any implementation of the contract must do per call, as cheaply as Python allows: "
        f"`ContractFloor` in `_echo.py`) reaches {floor:.3f}x.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
