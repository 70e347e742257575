"""Learning benchmark: which VW interactions (and SquareCB gamma_scale) Tailor should default to.

    .venv/bin/python -m benchmarks.learning [--seeds 3] [--sim-shoppers 25000] [--quick]

Every candidate learns four problems, each against the reference (VW's recommended contextual-bandit flags,
`--cb_explore_adf --squarecb -q ca --cubic cca --ignore_linear c`) on the same rounds in the same run:

- digits (scikit-learn's digits, labels as request-supplied actions, 2 passes), linear (a synthetic
  bilinear problem with request-supplied action features), sparse (20 sparse text context features):
  played in process on exactly the VW examples the service builds (`policies`), the reference with pyvw;
- simulator (`tailor simulate --target` against a `tailor serve` with the candidate's catalog keys; the
  reference is the same flags through the service, since its rounds need the service's session context).

Each figure is the median over seeds, with the spread. Then every candidate's server CPU per decision on
the load benchmark's traffic (interleaved, a ratio to 0.1's flags in the same run), the choice (the best
learning within +20% CPU), and the chosen default played through the running service on digits and
linear. Writes results.json and results.md beside this file (or --out).
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks._results import publish
from policies import DEFAULT_IGNORE_LINEAR, DEFAULT_INTERACTIONS, SquareCB

from ._candidates import BASELINE, CANDIDATES, REFERENCE_ARGS, SERVICE_REFERENCE, SIMULATOR_DEFAULT, Candidate
from ._cpu import cpu_per_decision
from ._in_process import oracle, play_reference, play_tailor, uniform
from ._problems import PROBLEMS
from ._service import play_service, play_simulator

HERE = Path(__file__).resolve().parent
IN_PROCESS = ("digits", "linear", "sparse")
CPU_BUDGET = 1.20  # a default may cost at most +20% server CPU per decision against 0.1's flags
TARGET_VS_REFERENCE = 0.95  # through the service, on digits and linear
TARGET_SIM_ORACLE, TARGET_SIM_SEGMENT = 0.90, 1.40


def spread(values: Sequence[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def timed(label: str, fn: Callable[..., float], *args: Any) -> float:
    started = time.perf_counter()
    value = fn(*args)
    print(f"  {label}: {value:.4f} ({time.perf_counter() - started:.1f} s)", flush=True)
    return value


def in_process(seeds: Sequence[int], candidates: Sequence[Candidate]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in IN_PROCESS:
        problem = PROBLEMS[name]
        print(f"{name}: in process", flush=True)
        ref = [timed(f"reference seed {s}", play_reference, problem, s, REFERENCE_ARGS) for s in seeds]
        row: dict[str, Any] = {
            "reference": spread(ref),
            "oracle": statistics.median(oracle(problem, s) for s in seeds),
            "uniform": statistics.median(uniform(problem, s) for s in seeds),
            "candidates": {},
        }
        for c in candidates:
            got = [timed(f"{c.name} seed {s}", play_tailor, problem, s, c.spec()) for s in seeds]
            row["candidates"][c.name] = {
                **spread(got),
                "ratio": spread([g / r for g, r in zip(got, ref, strict=True)]),
            }
        out[name] = row
    return out


def simulator(seeds: Sequence[int], candidates: Sequence[Candidate], shoppers: int, warmup: int) -> dict[str, Any]:
    print(f"simulator: {shoppers} shoppers, warm-up {warmup}, through the service", flush=True)
    runs: dict[str, list[dict[str, float]]] = {}
    for c in candidates:
        for s in seeds:
            r = play_simulator(c, s, shoppers, warmup)
            print(f"  {c.name} seed {s}: {r['service']:.4f} ({r['service'] / r['oracle']:.3f}x oracle, "
                  f"{r['service'] / r['segment']:.3f}x segment)", flush=True)  # fmt: skip
            runs.setdefault(c.name, []).append(r)
    ref = [r["service"] for r in runs[SERVICE_REFERENCE]]
    row: dict[str, Any] = {"reference": spread(ref), "candidates": {}}
    for name, rs in runs.items():
        got = [r["service"] for r in rs]
        row["candidates"][name] = {
            **spread(got),
            "ratio": spread([g / r for g, r in zip(got, ref, strict=True)]),
            "vs_oracle": spread([r["service"] / r["oracle"] for r in rs]),
            "vs_segment": spread([r["service"] / r["segment"] for r in rs]),
        }
    return row


def score(problems: dict[str, Any], name: str) -> float:
    """Learning across problems: the geometric mean of the candidate's median ratio to the reference."""
    ratios = [p["candidates"][name]["ratio"]["median"] for p in problems.values() if name in p["candidates"]]
    return math.exp(sum(math.log(r) for r in ratios) / len(ratios))


def choose(problems: dict[str, Any], cpu: dict[str, dict[str, float]]) -> str:
    """The best score among the candidates played on every problem and within the CPU budget."""
    base = cpu[BASELINE]["cpu_us_per_decision"]
    everywhere = [n for n in cpu if all(n in p["candidates"] for p in problems.values())]
    within = [n for n in everywhere if cpu[n]["cpu_us_per_decision"] <= CPU_BUDGET * base]
    return max(within, key=lambda n: score(problems, n))


def default_candidate() -> Candidate:
    matches = [
        c
        for c in CANDIDATES.values()
        if (c.interactions, c.ignore_linear, c.gamma_scale)
        == (DEFAULT_INTERACTIONS, DEFAULT_IGNORE_LINEAR, SquareCB().gamma_scale)
    ]
    if not matches:
        raise SystemExit("the current defaults are not among the candidates: add them to _candidates.py")
    return matches[0]


def through_service(seeds: Sequence[int], candidate: Candidate, problems: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in ("digits", "linear"):
        print(f"{name}: {candidate.name} through the service", flush=True)
        got = [timed(f"seed {s}", play_service, PROBLEMS[name], s, candidate) for s in seeds]
        ref = problems[name]["reference"]["median"]
        out[name] = {**spread(got), "ratio": statistics.median(got) / ref}
    return out


def report(r: dict[str, Any]) -> str:
    cpu, problems = r["cpu"], r["problems"]
    base = cpu[BASELINE]["cpu_us_per_decision"]
    names = list(cpu)
    lines = [
        "# Learning benchmark: results",
        "",
        f"{r['date']}, seeds {r['seeds']}, simulator {r['sim_shoppers']} shoppers (warm-up {r['sim_warmup']}). "
        f"Reference: in-process `{REFERENCE_ARGS}` on the same rounds (on the simulator: the same flags through "
        "the service). Cells: median ratio to the reference [min, max over seeds]; mean reward in brackets.",
        "",
        "| candidate | " + " | ".join(problems) + " | score | CPU µs/decision | CPU vs 0.1 |",
        "|---|" + "---|" * (len(problems) + 3),
    ]
    for n in names:
        cells = []
        for p in problems.values():
            c = p["candidates"].get(n)
            cells.append(
                "—" if c is None else
                f"{c['ratio']['median']:.3f} [{c['ratio']['min']:.2f}, {c['ratio']['max']:.2f}] ({c['median']:.3f})"
            )  # fmt: skip
        mark = " **chosen**" if n == r["chosen"] else ""
        lines.append(
            f"| {n}{mark} | " + " | ".join(cells) + f" | {score(problems, n):.3f} | "
            f"{cpu[n]['cpu_us_per_decision']:.0f} | {cpu[n]['cpu_us_per_decision'] / base:.2f}x |"
        )
    lines += ["", "| problem | reference | oracle | uniform |", "|---|---|---|---|"]
    for name, p in problems.items():
        lines.append(f"| {name} | {p['reference']['median']:.3f} | {p.get('oracle', float('nan')):.3f} | "
                     f"{p.get('uniform', float('nan')):.3f} |")  # fmt: skip
    sim = problems.get("simulator")
    if sim:
        lines += ["", "Simulator, against its own baselines (after warm-up, median over seeds):", "",
                  "| candidate | vs oracle | vs best segment rule |", "|---|---|---|"]  # fmt: skip
        for n, c in sim["candidates"].items():
            lines.append(f"| {n} | {c['vs_oracle']['median']:.3f}x | {c['vs_segment']['median']:.3f}x |")
    svc = r.get("service")
    if svc:
        title = f"The chosen candidate ({r['chosen']}) through the running service, against the in-process reference:"
        header = "| problem | service (median) | spread | vs reference | target |"
        lines += ["", title, "", header, "|---|---|---|---|---|"]
        for name, s in svc.items():
            lines.append(f"| {name} | {s['median']:.3f} | [{s['min']:.3f}, {s['max']:.3f}] | {s['ratio']:.3f}x | "
                         f"≥ {TARGET_VS_REFERENCE}x |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--sim-shoppers", type=int, default=25_000)
    parser.add_argument("--sim-warmup", type=int, default=12_500)
    parser.add_argument(
        "--sim-candidates", default="|".join(SIMULATOR_DEFAULT), help="names joined by '|' ('all' for every one)"
    )
    parser.add_argument("--cpu-seconds", type=float, default=5.0)
    parser.add_argument("--cpu-repeats", type=int, default=3)
    parser.add_argument("--no-simulator", action="store_true")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    seeds = list(range(1, args.seeds + 1))
    candidates = list(CANDIDATES.values())
    problems = in_process(seeds, candidates)
    if not args.no_simulator:
        wanted = set(CANDIDATES) if args.sim_candidates == "all" else set(args.sim_candidates.split("|"))
        sim = [c for c in candidates if c.name in wanted | {SERVICE_REFERENCE, BASELINE}]
        problems["simulator"] = simulator(seeds, sim, args.sim_shoppers, args.sim_warmup)
    print("server CPU per decision on the load traffic", flush=True)
    with tempfile.TemporaryDirectory(prefix="tailor-learning-cpu-") as tmp:
        cpu = cpu_per_decision(candidates, Path(tmp), args.cpu_seconds, args.cpu_repeats)
    chosen = choose(problems, cpu)
    default = default_candidate()
    print(f"chosen: {chosen} (the defaults now: {default.name})", flush=True)
    result: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "seeds": seeds,
        "sim_shoppers": args.sim_shoppers,
        "sim_warmup": args.sim_warmup,
        "reference_args": REFERENCE_ARGS,
        "problems": problems,
        "cpu": cpu,
        "chosen": chosen,
        "default": default.name,
    }
    result["service"] = through_service(seeds, CANDIDATES[chosen], problems)
    publish(args.out, result, report(result))
    if default.name != chosen:
        print(f"the benchmark chooses {chosen!r} but the defaults are {default.name!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
