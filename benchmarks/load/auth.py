"""What API keys cost: Tailor without keys (protected mode, loopback) against Tailor with `--api-keys`, in one run.

    .venv/bin/python -m benchmarks.load.auth [--seconds 5] [--repeats 3] [--keys 20]

Both servers get the load benchmark's traffic (the keyed one with `authorization: Bearer` on every call,
its key file holding --keys entries, the key sought last), beside the echo floor, interleaved; closed loop
at 32 in flight, open loop at 500 and 1,000 decisions/s. Prints server CPU per decision and p99 for both and
their ratio (target: keys cost at most +5% CPU per decision), and writes auth.json / auth.md beside this file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from server.tools.launcher import ServeProcess

from .__main__ import Deployment, EchoProcess, run_interleaved
from ._traffic import write_catalog

HERE = Path(__file__).resolve().parent
CONFIGS = (("closed", 32), ("open", 500), ("open", 1000))
SHOWN = ("decisions_per_s", "p99_ms", "cpu_us_per_decision")
TARGET = 1.05


def write_keys(path: Path, count: int) -> str:
    """A key file of `count` entries; returns the key of the last one (the most comparisons)."""
    keys = [f"bench-key-{i}" for i in range(count)]
    entries = [
        {"name": f"gw{i}", "sha256": hashlib.sha256(k.encode()).hexdigest(), "roles": ["decide"]}
        for i, k in enumerate(keys)
    ]
    path.write_text(yaml.safe_dump({"keys": entries}))
    return keys[-1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keys", type=int, default=20, help="entries in the key file")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tailor-auth-") as tmp:
        catalogs = Path(tmp) / "catalogs"
        catalogs.mkdir()
        write_catalog(catalogs)
        key = write_keys(Path(tmp) / "keys.yaml", args.keys)
        echo = EchoProcess()
        open_ = ServeProcess(catalogs, Path(tmp) / "data-open").start()
        keyed = ServeProcess(catalogs, Path(tmp) / "data-keyed", ["--api-keys", str(Path(tmp) / "keys.yaml")]).start()
        try:
            assert echo.proc and open_.proc and keyed.proc
            deployments = {
                "echo": Deployment([echo.target], {"serve": [echo.proc.pid]}),
                "no keys": Deployment([open_.target], {"serve": [open_.proc.pid]}),
                "keys": Deployment([keyed.target], {"serve": [keyed.proc.pid]}, api_key=key),
            }
            runs = run_interleaved(deployments, CONFIGS, args.seconds, args.repeats)
        finally:
            echo.stop()
            open_.stop()
            keyed.stop()
    medians = {
        name: {config: {m: statistics.median(r[m] for r in results) for m in SHOWN} for config, results in c.items()}
        for name, c in runs.items()
    }
    ratios = {
        config: medians["keys"][config]["cpu_us_per_decision"] / medians["no keys"][config]["cpu_us_per_decision"]
        for config in medians["keys"]
    }
    result: dict[str, Any] = {
        "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "seconds": args.seconds,
        "repeats": args.repeats,
        "key_file_entries": args.keys,
        "medians": medians,
        "cpu_ratio_keys_vs_none": ratios,
        "target": TARGET,
        "runs": runs,
    }
    lines = [
        "# API keys: what they cost per decision",
        "",
        f"{result['when']}, `python -m benchmarks.load.auth --seconds {args.seconds:g} --repeats {args.repeats}`: "
        f"the load benchmark's traffic, {args.keys} keys in the file (the one used is the last), medians of "
        f"{args.repeats} interleaved repeats.",
        "",
        "| load | server | decisions/s | p99 ms | server CPU µs/decision | CPU vs no keys |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for config in medians["keys"]:
        for name in ("echo", "no keys", "keys"):
            m = medians[name][config]
            ratio = f"{ratios[config]:.3f}x" if name == "keys" else ""
            figures = f"{m['decisions_per_s']:.0f} | {m['p99_ms']:.2f} | {m['cpu_us_per_decision']:.0f}"
            lines.append(f"| {config} | {name} | {figures} | {ratio} |")
    verdict = max(ratios.values())
    lines += ["", f"Worst CPU ratio {verdict:.3f}x against the target of at most {TARGET:.2f}x: "
              f"{'met' if verdict <= TARGET else 'missed'}."]  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "auth.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "auth.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
