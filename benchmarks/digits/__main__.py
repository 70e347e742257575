"""``python -m benchmarks.digits``: run the learning-parity benchmark, print the table, write the results.

Exits 1 when the service's default exploration (squarecb) learns less than 0.9x in-process VW, or not
far above random, so the benchmark can gate a change to the service's learning path; 2 when the service
could not be run at all.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

from ._problem import ALGORITHMS, DEFAULT_ALGORITHMS, RANDOM_BASELINE, SERVICE_DEFAULT, make_rounds, vw_args
from ._reference import ReferenceRun, run_reference, run_replay
from ._report import AlgorithmResult, table, write
from ._service import PROJECT_ROOT, ServiceRun, run_service

PARITY_BAR = 0.9  # service mean reward >= this x in-process VW (the bar)
ABOVE_RANDOM = 3.0  # and >= this x the random baseline, so "parity" cannot mean "both learned nothing"


def _algorithms(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in ALGORITHMS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown algorithm(s) {unknown}; choose from {', '.join(ALGORITHMS)}")
    return names


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.digits", description=__doc__)
    p.add_argument("--seeds", type=_positive, default=3, help="seeds 1..N per algorithm (default 3)")
    p.add_argument(
        "--algorithms",
        type=_algorithms,
        default=list(DEFAULT_ALGORITHMS),
        help=f"comma-separated, from {', '.join(ALGORITHMS)} (default {','.join(DEFAULT_ALGORITHMS)})",
    )
    p.add_argument("--passes", type=_positive, default=3, help="passes over the data per run (default 3)")
    p.add_argument("--out", type=Path, default=Path(__file__).parent, help="where results.json/.md go")
    return p


def _log(message: str) -> None:
    print(message, flush=True)


def _measure(algorithm: str, seeds: list[int], passes: int) -> AlgorithmResult:
    """Every seed of one algorithm: in process first (about a second each), then through the service."""
    exploration = ALGORITHMS[algorithm]
    runs: list[ServiceRun] = []
    references: list[ReferenceRun] = []
    replays: list[ReferenceRun] = []
    reference_seconds: list[float] = []
    for seed in seeds:
        rounds = make_rounds(passes, seed)
        started = time.perf_counter()
        references.append(run_reference(exploration, rounds, seed))
        reference_seconds.append(time.perf_counter() - started)
        replays.append(run_replay(exploration, rounds, seed))
        _log(
            f"{algorithm} seed {seed}: in-process VW {references[-1].mean_reward:.3f} "
            f"({reference_seconds[-1]:.1f} s), replay of the service's draws {replays[-1].mean_reward:.3f}"
        )

        def progress(done: int, total: int, mean: float, seed: int = seed) -> None:
            _log(f"{algorithm} seed {seed}: service {done}/{total} decisions, mean reward {mean:.3f}")

        run = run_service(exploration, rounds, seed, progress, per_pass=len(rounds) // passes)
        runs.append(run)
        _log(f"{algorithm} seed {seed}: service {run.mean_reward:.3f} ({run.seconds:.1f} s, {run.statuses_line()})")
    return AlgorithmResult.build(algorithm, vw_args(exploration), seeds, runs, references, replays, reference_seconds)


def _verdict(results: list[AlgorithmResult]) -> tuple[str, bool]:
    """Whether the service's default exploration clears the bar, and which algorithm learned best."""
    best = max(results, key=lambda r: r.service.median)
    best_line = f"Best through the service: {best.algorithm} ({best.service.median:.3f} median mean reward)."
    default = next((r for r in results if r.algorithm == SERVICE_DEFAULT), None)
    if default is None:
        return f"{SERVICE_DEFAULT} (the service default) was not run, so the bar was not checked. {best_line}", True
    times_random = default.service.median / RANDOM_BASELINE
    passed = default.ratio >= PARITY_BAR and times_random >= ABOVE_RANDOM
    verdict = (
        f"{'PASS' if passed else 'FAIL'}: {SERVICE_DEFAULT} (the service default) reaches {default.ratio:.3f}x "
        f"in-process VW (bar {PARITY_BAR}) and {times_random:.1f}x random (bar {ABOVE_RANDOM:.0f}x). {best_line}"
    )
    return verdict, passed


_CODE = ("server", "policies", "tailor")  # what the service runs; a change elsewhere cannot move the numbers


def _git(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(PROJECT_ROOT), *args], capture_output=True, text=True)


def _commit() -> str:
    """HEAD's short hash, marked dirty when the service's code differs from it (what is being measured)."""
    try:
        head = _git("rev-parse", "--short", "HEAD")
        dirty = _git("status", "--porcelain", "--", *_CODE)
    except OSError:
        return "unknown"
    if head.returncode != 0:
        return "unknown"
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def _code_changed_since(commit: str) -> bool:
    """Whether the service's code now differs from a clean `commit` (each run restarts the service, so a
    mid-run change is measured); a tree already dirty at the start is reported as dirty instead."""
    if commit == "unknown" or commit.endswith("-dirty"):
        return False
    try:
        return _git("diff", "--quiet", commit, "--", *_CODE).returncode == 1
    except OSError:
        return False


def _meta(argv: list[str], seeds: list[int], passes: int, rounds: int, seconds: float, commit: str) -> dict[str, Any]:
    python = os.path.relpath(sys.executable, PROJECT_ROOT)
    python = python if not python.startswith("..") else "python"
    return {
        "benchmark": "digits learning parity",
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "vowpalwabbit": version("vowpalwabbit"),
        "commit": commit,
        "command": shlex.join([python, "-m", "benchmarks.digits", *argv]),
        "seeds": seeds,
        "passes": passes,
        "rounds": rounds,
        "random_baseline": RANDOM_BASELINE,
        "parity_bar": PARITY_BAR,
        "total_seconds": round(seconds, 1),
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(argv)
    seeds = list(range(1, args.seeds + 1))
    started = time.perf_counter()
    commit = _commit()
    try:
        results = [_measure(algorithm, seeds, args.passes) for algorithm in args.algorithms]
    except RuntimeError as err:  # the service did not start, or failed mid-run; the message has its log
        _log(f"benchmark aborted: {err}")
        return 2
    verdict, passed = _verdict(results)
    rounds = len(make_rounds(args.passes, seeds[0]))
    if _code_changed_since(commit):
        commit += f", service code changed during the run (now {_commit()})"
    meta = _meta(argv, seeds, args.passes, rounds, time.perf_counter() - started, commit)
    write(args.out, results, meta, verdict, passed)
    _log("\n" + table(results) + "\n")
    for problem in (p for r in results for p in r.problems):
        _log(f"problem: {problem}")
    _log(verdict)
    _log(f"wrote {args.out / 'results.json'} and {args.out / 'results.md'} in {meta['total_seconds']:.0f} s")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
