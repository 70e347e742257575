"""``python -m benchmarks.evidence``: the decision log at scale: writing it, exporting it, VW reading it back,
and `tailor evaluate` on it, against VW learning the same decisions from Tailor's text format.

    .venv/bin/python -m benchmarks.evidence [--decisions 100000] [--repeats 3] [--evaluate-repeats 2]

Generates `--decisions` logged decisions in process (`_world.py`: 4-15 candidates of 4 features, 20
shared features, ~30% rewarded, Tailor's default policy learning as it goes), written through the
embedded learner's decision log into a temporary data directory, then measures in the same run:

- (a) baseline: `VWPolicy.learn` on the same decisions from Tailor's VW text, in the order learned;
- the decision log's cost inside the learner (`dsjson_line` + `FileEvidenceLog.write`), per decision;
- (b) `tailor export-logs --out F --data-dir DIR` (a subprocess: wall, CPU, peak memory);
- (c) VW reading the export back (`--cb_explore_adf ... --dsjson --chain_hash`, pyvw parse + learn +
  finish per line), interleaved with (a) over `--repeats`, medians;
- (d) `tailor evaluate F --out DIR --candidates C` with one candidate and with two (subprocesses), and
  each candidate's replay seconds from its report.json, alternated over `--evaluate-repeats`, medians;
  the budget is under a minute per candidate.

It also checks, at that scale, that the model VW learns from the exported lines equals the one learned
from the text (every weight of their `--readable_model` dumps, and the probabilities both predict on a
sample of decisions), and exits 1 if not. Writes results.json and results.md beside this file (or --out).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vowpalwabbit import pyvw

from benchmarks._results import publish
from policies import LearningSpec, VWPolicy, reward_to_cost
from server.state.evidence import Pseudonymizer

from ._world import KEY, Generated, Logged, generate, scores_pmf

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
COMMITTED_DECISIONS = 100_000
BUDGET_SECONDS = 60.0  # per candidate, for 100k decisions
SAMPLE = 1000  # decisions whose predicted probabilities are compared

ONE = {"candidates": [{"name": "tailor-defaults"}]}
TWO = {
    "candidates": [
        {"name": "tailor-defaults"},
        {
            "name": "epsilon-greedy",
            "exploration": {"algorithm": "epsilon_greedy", "epsilon": 0.05},
        },
    ]
}


@dataclass(frozen=True)
class Run:
    """A finished subprocess: wall seconds, CPU seconds (user + system), peak resident memory (MB), output."""

    wall: float
    cpu: float
    peak_mb: float
    output: str


# `python -m server ARGS` that reports its own peak memory (VmHWM) on exit. The rusage of a forked child
# cannot tell it: its peak includes the parent's memory it shared before exec (this process holds the
# generated decisions: hundreds of MB).
_TAILOR = """
import runpy, sys
try:
    runpy.run_module("server", run_name="__main__", alter_sys=True)
finally:
    with open("/proc/self/status") as status:
        peak = [line.split()[1] for line in status if line.startswith("VmHWM:")]
    print("peak-kb", peak[0] if peak else 0, file=sys.stderr)
"""


def _run(command: list[str], log: Path) -> Run:
    with log.open("w") as f:
        started = time.perf_counter()
        proc = subprocess.Popen(command, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own CPU time
        wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    output = log.read_text()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} exited {proc.returncode}:\n{output}")
    kept = [line for line in output.splitlines() if not line.startswith("peak-kb ")]
    peaks = [int(line.split()[1]) for line in output.splitlines() if line.startswith("peak-kb ")]
    return Run(wall, usage.ru_utime + usage.ru_stime, peaks[-1] / 1024 if peaks else 0.0, "\n".join(kept).strip())


def _tailor(*args: str | Path) -> list[str]:
    """`tailor ARGS` as `python -m server ARGS` (with its peak memory reported)."""
    return [sys.executable, "-c", _TAILOR, *(str(a) for a in args)]


def text_learn(decisions: list[Logged]) -> tuple[float, VWPolicy]:
    """(a): seconds for VWPolicy.learn over the decisions, from Tailor's text, in the order learned."""
    policy = VWPolicy(LearningSpec())
    started = time.perf_counter()
    for item in decisions:
        r = item.record
        policy.learn(r.shared, r.actions, r.chosen, reward_to_cost(item.reward, *r.reward_range), r.probability)
    return time.perf_counter() - started, policy


def dsjson_learn(lines: list[str]) -> tuple[float, pyvw.Workspace]:
    """(c): seconds for VW to parse and learn every exported line, as a data scientist would with pyvw."""
    ws = pyvw.Workspace(f"{LearningSpec().vw_args()} --dsjson --chain_hash --quiet", enable_logging=False)
    started = time.perf_counter()
    for line in lines:
        examples = ws.parse(line)
        ws.learn(examples)
        ws.finish_example(examples)
    return time.perf_counter() - started, ws


def _weights(model: Path) -> dict[str, str]:
    """A VW model's weights (`index:value` lines of its readable dump), whatever options it was trained with."""
    readable = model.with_suffix(".txt")
    pyvw.Workspace(f"--quiet -i {model} --readable_model {readable}", enable_logging=False).finish()
    return dict(line.split(":", 1) for line in readable.read_text().splitlines() if re.match(r"^\d+:", line))


def check_same_model(
    policy: VWPolicy, ws: pyvw.Workspace, decisions: list[Logged], lines: list[str], tmp: Path
) -> dict[str, Any]:
    """Does VW learn from the exported lines exactly the model learned from the text? Weights and predictions."""
    policy.save(tmp / "text.vw")
    ws.save(str(tmp / "dsjson.vw"))
    text_weights, dsjson_weights = _weights(tmp / "text.vw"), _weights(tmp / "dsjson.vw")
    differing = sum(text_weights.get(k) != dsjson_weights.get(k) for k in text_weights.keys() | dsjson_weights.keys())
    pseudonymize = Pseudonymizer(KEY)
    step = max(1, len(decisions) // SAMPLE)
    compared = mismatched = misaligned = 0
    for item, line in zip(decisions[::step], lines[::step], strict=True):
        r = item.record
        if json.loads(line)["EventId"] != pseudonymize(r.event_id):
            misaligned += 1  # the export is not in the order learned
            continue
        expected = policy.predict(r.shared, r.actions)
        examples = ws.parse(line)
        try:
            got = scores_pmf(ws.predict(examples))
        finally:
            ws.finish_example(examples)
        compared += 1
        mismatched += got != expected
    return {
        "weights": len(text_weights),
        "weights_differing": differing,
        "predictions_compared": compared,
        "predictions_differing": mismatched,
        "lines_out_of_order": misaligned,
        "same": differing == 0 and mismatched == 0 and misaligned == 0 and len(text_weights) > 0,
    }


def true_values(decisions: list[Logged], baseline: str) -> dict[str, float]:
    """The simulator's expected reward, on these decisions' contexts and candidates, of the logging policy,
    uniform and the baseline action (evaluate's rule: the baseline, else the first candidate)."""
    logged = uniform = base = 0.0
    for item in decisions:
        expected = item.expected
        ids = _ids(item)
        logged += sum(p * e for p, e in zip(item.pmf, expected, strict=True))
        uniform += sum(expected) / len(expected)
        base += expected[ids.index(baseline)] if baseline in ids else expected[0]
    n = len(decisions)
    return {"logged": logged / n, "uniform": uniform / n, "baseline": base / n}


def _ids(item: Logged) -> list[str]:
    return [line.split(" ", 2)[1][3:] for line in item.record.actions]  # "|a id=<id> ..."


@dataclass
class Evaluations:
    """The `tailor evaluate` runs of one candidates file."""

    runs: list[Run] = field(default_factory=list)
    reports: list[dict[str, Any]] = field(default_factory=list)

    def add(self, exported: Path, candidates: dict[str, Any], tmp: Path, name: str) -> Run:
        spec = tmp / f"{name}.yaml"
        spec.write_text(json.dumps(candidates))  # JSON is YAML
        out = tmp / f"evaluate-{name}"
        run = _run(_tailor("evaluate", exported, "--out", out, "--candidates", spec), tmp / f"evaluate-{name}.log")
        self.runs.append(run)
        self.reports.append(json.loads((out / "report.json").read_text()))
        return run

    def figures(self, baseline_seconds: float) -> dict[str, Any]:
        """Medians over the runs (peak memory: the largest), each candidate's replay seconds included."""
        wall = statistics.median(r.wall for r in self.runs)
        replays: dict[str, list[float]] = {}
        for report in self.reports:
            for row in report["decision_points"][0]["policies"]:
                if "replay_seconds" in row:
                    replays.setdefault(row["policy"], []).append(row["replay_seconds"])
        return {
            "wall_seconds": round(wall, 2),
            "cpu_seconds": round(statistics.median(r.cpu for r in self.runs), 2),
            "peak_mb": round(max(r.peak_mb for r in self.runs)),
            "x_a": wall / baseline_seconds,
            "replay_seconds": {name: statistics.median(values) for name, values in replays.items()},
            "runs_wall_seconds": [round(r.wall, 2) for r in self.runs],
            "runs_cpu_seconds": [round(r.cpu, 2) for r in self.runs],
            "report_seconds": [report["seconds"] for report in self.reports],
        }


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.evidence", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--decisions", type=int, default=COMMITTED_DECISIONS, help="logged decisions (default 100000)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved repeats of (a) and (c) (default 3)")
    p.add_argument("--evaluate-repeats", type=int, default=2, help="interleaved runs of each evaluate (default 2)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", type=Path, default=HERE, help="where results.json/.md go (default: beside this file)")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = _parser()
    args = parser.parse_args(argv)
    if args.decisions < 1000 or args.repeats < 1 or args.evaluate_repeats < 1:
        parser.error("--decisions must be at least 1000, --repeats and --evaluate-repeats at least 1")
    if args.decisions != COMMITTED_DECISIONS and args.out.resolve() == HERE:
        parser.error(f"the committed table is for {COMMITTED_DECISIONS} decisions: pass --out DIR for another size")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tailor-bench-evidence-") as name:
        tmp = Path(name)
        print(f"generating {args.decisions:,} logged decisions ...", flush=True)
        gen = generate(args.decisions, tmp / "data", args.seed)
        print(f"  {gen.seconds:.1f} s ({gen.rewarded / args.decisions:.0%} rewarded)", flush=True)

        exported = tmp / "decisions.dsjson"
        startup = _run(_tailor("export-logs", "--help"), tmp / "help.log")
        export = _run(_tailor("export-logs", "--out", exported, "--data-dir", tmp / "data"), tmp / "export.log")
        lines = exported.read_text(encoding="utf-8").splitlines()
        if len(lines) != args.decisions:
            raise SystemExit(f"export-logs wrote {len(lines)} lines for {args.decisions} decisions: {export.output}")
        print(f"  export-logs {export.wall:.1f} s", flush=True)

        runs: dict[str, list[float]] = {"text": [], "dsjson": []}
        for repeat in range(args.repeats):
            seconds, policy = text_learn(gen.decisions)
            runs["text"].append(seconds)
            seconds, ws = dsjson_learn(lines)
            runs["dsjson"].append(seconds)
            print(f"  repeat {repeat + 1}: text {runs['text'][-1]:.1f} s, dsjson {seconds:.1f} s", flush=True)
            if repeat + 1 < args.repeats:
                policy.close()
                ws.finish()
        check = check_same_model(policy, ws, gen.decisions, lines, tmp)
        policy.close()
        ws.finish()
        print(f"  same model: {check['same']}", flush=True)

        one, two = Evaluations(), Evaluations()
        for repeat in range(args.evaluate_repeats):
            run = one.add(exported, ONE, tmp, "one")
            print(f"  evaluate {repeat + 1}, 1 candidate: {run.wall:.1f} s (CPU {run.cpu:.1f} s)", flush=True)
            run = two.add(exported, TWO, tmp, "two")
            print(f"  evaluate {repeat + 1}, 2 candidates: {run.wall:.1f} s (CPU {run.cpu:.1f} s)", flush=True)
        export_mb = exported.stat().st_size / 1e6
    result = _result(args, argv, gen, startup, export, export_mb, runs, check, one, two)
    result["total_seconds"] = round(time.perf_counter() - started, 1)
    publish(args.out, result, table(result))
    return 0 if check["same"] else 1


def _result(
    args: argparse.Namespace,
    argv: list[str],
    gen: Generated,
    startup: Run,
    export: Run,
    export_mb: float,
    runs: dict[str, list[float]],
    check: dict[str, Any],
    one: Evaluations,
    two: Evaluations,
) -> dict[str, Any]:
    n = args.decisions
    text, dsjson = statistics.median(runs["text"]), statistics.median(runs["dsjson"])
    [point] = two.reports[-1]["decision_points"]
    truth = true_values(gen.decisions, point["baseline"])

    def subprocess_figures(run: Run) -> dict[str, float]:
        return {"wall_seconds": round(run.wall, 2), "cpu_seconds": round(run.cpu, 2), "peak_mb": round(run.peak_mb)}

    python = os.path.relpath(sys.executable, Path.cwd())
    return {
        "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join([python if not python.startswith("..") else "python", "-m", "benchmarks.evidence", *argv]),
        "decisions": n,
        "repeats": args.repeats,
        "seed": args.seed,
        "rewarded_share": gen.rewarded / n,
        "mean_candidates": statistics.mean(len(d.pmf) for d in gen.decisions),
        "shared_features": 20,
        "export_mb": round(export_mb, 1),
        "generation": {
            "seconds": round(gen.seconds, 2),
            "learn_seconds": round(gen.learn_seconds, 2),
            "log_seconds": round(gen.log_seconds, 2),
            "log_us_per_decision": gen.log_seconds / n * 1e6,
            "log_x_learn": gen.log_seconds / gen.learn_seconds,
        },
        "a_text_learn": {"seconds": text, "us_per_decision": text / n * 1e6, "runs": runs["text"]},
        "b_export": {**subprocess_figures(export), "x_a": export.wall / text, "output": export.output},
        "python_startup": subprocess_figures(startup),
        "c_dsjson_learn": {
            "seconds": dsjson,
            "us_per_decision": dsjson / n * 1e6,
            "x_a": dsjson / text,
            "runs": runs["dsjson"],
        },
        "same_model": check,
        "d_evaluate": {
            "one_candidate": (first := one.figures(text)),
            "two_candidates": (second := two.figures(text)),
            "second_candidate_wall_seconds": round(second["wall_seconds"] - first["wall_seconds"], 2),
            "second_candidate_cpu_seconds": round(second["cpu_seconds"] - first["cpu_seconds"], 2),
            "repeats": args.evaluate_repeats,
            "candidates": TWO["candidates"],
            # judged at the budget's own size only: start-up and imports are a fixed ~2 s
            "within_budget": (first["wall_seconds"] <= BUDGET_SECONDS and second["wall_seconds"] <= 2 * BUDGET_SECONDS)
            if n == COMMITTED_DECISIONS
            else None,
        },
        "estimates": {
            "baseline_action": point["baseline"],
            "logged_mean": point["logged_mean"],
            "true_values": truth,
            "policies": [{k: row[k] for k in ("policy", "ips", "snips", "dr")} for row in point["policies"]],
        },
    }


def _covered(estimate: dict[str, Any] | None, truth: float | None) -> str:
    if estimate is None:
        return "n/a"
    cell = f"{estimate['value']:.4f} [{estimate['low']:.4f}, {estimate['high']:.4f}]"
    if truth is not None and not estimate["low"] <= truth <= estimate["high"]:
        cell += " (misses)"
    return cell


def table(result: dict[str, Any]) -> str:
    n = result["decisions"]
    gen, a, b, c, d = (result[k] for k in ("generation", "a_text_learn", "b_export", "c_dsjson_learn", "d_evaluate"))
    check = result["same_model"]
    one, two = d["one_candidate"], d["two_candidates"]
    seconds = a["seconds"]

    def x(value: float) -> str:
        return f"{value / seconds:.2f}x"

    def us(value: float) -> str:
        return f"{value / n * 1e6:,.0f}"

    replays_two = ", ".join(f"{name} {s:.1f} s" for name, s in two["replay_seconds"].items())
    replays_one = ", ".join(f"{name} {s:.1f} s" for name, s in one["replay_seconds"].items())
    lines = [
        f"Measured {result['when']}: {n:,} logged decisions ({result['mean_candidates']:.1f} candidates of 4 "
        f"features on average, {result['shared_features']} shared features, {result['rewarded_share']:.0%} "
        f"rewarded; {result['export_mb']:,.0f} MB of DSJSON). (a) and (c) interleaved over {result['repeats']} "
        f"repeats, the two evaluate runs over {d['repeats']}; medians. Command: `{result['command']}` "
        f"({result['total_seconds']:.0f} s).",
        "",
        "| step | seconds | µs per decision | x (a) | notes |",
        "|---|---|---|---|---|",
        f"| (a) **baseline**: VW learns the decisions from Tailor's text (`VWPolicy.learn`) | {seconds:.2f} "
        f"| {us(seconds)} | 1.00x | |",
        f"| writing the decision log in the learner (`dsjson_line` + `FileEvidenceLog.write`) | "
        f"{gen['log_seconds']:.2f} | {us(gen['log_seconds'])} | {x(gen['log_seconds'])} | measured while generating, "
        f"beside {gen['learn_seconds']:.2f} s of `VWPolicy.learn` in the same loop ({gen['log_x_learn']:.1f}x it) |",
        f"| (b) `tailor export-logs` (subprocess) | {b['wall_seconds']:.2f} | {us(b['wall_seconds'])} "
        f"| {x(b['wall_seconds'])} | CPU {b['cpu_seconds']:.1f} s, peak {b['peak_mb']:,.0f} MB; Python start-up and "
        f"imports alone (`export-logs --help`): {result['python_startup']['wall_seconds']:.1f} s |",
        f"| (c) VW reads the export back (`--dsjson --chain_hash`, pyvw parse + learn + finish) | {c['seconds']:.2f} "
        f"| {us(c['seconds'])} | {x(c['seconds'])} | |",
        f"| (d) `tailor evaluate`, 1 candidate (subprocess) | {one['wall_seconds']:.2f} | {us(one['wall_seconds'])} "
        f"| {x(one['wall_seconds'])} | CPU {one['cpu_seconds']:.1f} s, peak {one['peak_mb']:,.0f} MB; replay: "
        f"{replays_one} |",
        f"| (d) `tailor evaluate`, 2 candidates (subprocess) | {two['wall_seconds']:.2f} | {us(two['wall_seconds'])} "
        f"| {x(two['wall_seconds'])} | CPU {two['cpu_seconds']:.1f} s, peak {two['peak_mb']:,.0f} MB; replay: "
        f"{replays_two}; the second candidate added {d['second_candidate_wall_seconds']:.1f} s "
        f"({d['second_candidate_cpu_seconds']:.1f} s of CPU) |",
        "",
        f"Budget (100k decisions in under {BUDGET_SECONDS:.0f} s per candidate): "
        + {True: "**met**.", False: "**missed**.", None: "not judged at this size."}[d["within_budget"]],
        "",
        "Same model: "
        + (
            f"**yes**: VW learning from the exported lines and VW learning from Tailor's text hold the same "
            f"{check['weights']:,} weights (`--readable_model`, every one identical) and predict the same "
            f"probabilities on {check['predictions_compared']:,} of the decisions."
            if check["same"]
            else f"**NO**: {check['weights_differing']} weights and {check['predictions_differing']} of "
            f"{check['predictions_compared']} predictions differ; {check['lines_out_of_order']} sampled lines out "
            "of order."
        ),
        "",
    ]
    est = result["estimates"]
    truth = est["true_values"]
    lines += [
        f"`tailor evaluate`'s estimates (2-candidate run; baseline action `{est['baseline_action']}`), beside the "
        "simulator's expected reward of the same policy on the same contexts and candidates where it is known:",
        "",
        "| policy | true value | IPS | SNIPS | DR |",
        "|---|---|---|---|---|",
    ]
    for row in est["policies"]:
        known = truth.get(row["policy"])
        lines.append(
            f"| {row['policy']} | {'' if known is None else f'{known:.4f}'} | {_covered(row['ips'], known)} "
            f"| {_covered(row['snips'], known)} | {_covered(row['dr'], known)} |"
        )
    cands = "; ".join(
        f"`{c['name']}`: " + (json.dumps({k: v for k, v in c.items() if k != "name"}) if len(c) > 1 else "defaults")
        for c in d["candidates"]
    )
    lines += ["", f"Candidates: {cands}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
