"""`tailor simulate`: synthetic shoppers against a running server, over gRPC, against honest baselines.

Shoppers with hidden intents (_shoppers.py) browse, get a layout from the service,
and buy or not (_driver.py); the service learns only from what they do. Its
conversion is compared, block by block on the very same shoppers, with what random choice, the best
single layout, the best demographic-segment rule and the intent oracle would have earned
(_report.py). The run fails (exit 1) when the comparison would prove nothing (the
segment rule barely beats random, or the oracle barely beats the rule) or when the service misses the
measure after the warm-up; exit 2 means the run itself could not be carried out.

The model, the flags and the committed results are described in benchmarks/simulate/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import sys
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from server.tools.client_flags import ClientCredentials, add_client_flags

from ._driver import DEFAULT_DECISION_POINT, REWARD_WINDOW_SECONDS, EmbeddedServer, drive
from ._report import (
    Block,
    Check,
    PickTally,
    Tally,
    honesty_checks,
    measure_checks,
    missing_plot_extra,
    table_header,
    table_row,
    write_results,
)
from ._shoppers import (
    ACTIONS,
    CART_ONLY_SHARE,
    DEMOGRAPHICS,
    INTENTS,
    ShopperFactory,
    best_single_action,
    demographic_intent_accuracy,
    segment_rules,
)

_DEFAULTS: dict[str, object] = {
    "shoppers": 50_000,
    "seed": 1,
    "warmup": 12_500,
    "block": 2_500,
    "concurrency": 8,
    "target": None,
    "decision-point": DEFAULT_DECISION_POINT,
    "out": Path("benchmarks/simulate"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Drive synthetic shoppers (hidden intents, visible only in their behaviour events; weakly informative "
        "demographics in the request context) against a Tailor server, and compare its conversion with random, "
        "the best single layout, the best demographic-segment rule and the oracle, on the same shoppers. "
        "Prints a table per block, writes results.json, results.md and learning_curve.png. "
        "Exit 0 when every check passes (honesty, measure, integrity), 1 when one fails, 2 when the run cannot be done."
    )
    numbers = (
        ("shoppers", "shoppers to simulate; the default run takes about a minute on 2 cores"),
        ("seed", "seed of the shopper population"),
        ("warmup", "shoppers served before the measure starts"),
        ("block", "shoppers per table row and plot point"),
        ("concurrency", "shoppers in flight at once"),
    )
    for name, text in numbers:
        parser.add_argument(f"--{name}", type=int, default=_DEFAULTS[name], help=f"{text} (default {_DEFAULTS[name]})")
    parser.add_argument(
        "--target",
        metavar="HOST:PORT[,HOST:PORT...]",
        help="drive these running servers (shoppers round-robin; each outcome goes to the next replica) instead "
        "of starting an embedded one; their catalog must have the decision "
        f"point named by --decision-point with exactly the actions {', '.join(ACTIONS)} and reward rules that "
        "reward add_to_cart and purchase within a short window (the embedded catalog: add_to_cart 0.3, "
        f"purchase 1.0, aggregation max, a {REWARD_WINDOW_SECONDS:g} s window)",
    )
    parser.add_argument(
        "--decision-point",
        default=_DEFAULTS["decision-point"],
        help=f"decision point to ask (default {DEFAULT_DECISION_POINT}, the embedded server's catalog)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=_DEFAULTS["out"],
        help="directory for results.json, results.md, learning_curve.png (default benchmarks/simulate)",
    )
    add_client_flags(parser)


def _arg_problem(args: argparse.Namespace) -> str | None:
    if args.shoppers < 1 or args.block < 1 or args.concurrency < 1:
        return "--shoppers, --block and --concurrency must be at least 1"
    if not 0 <= args.warmup < args.shoppers:
        return f"--warmup must lie in [0, --shoppers): got {args.warmup} with {args.shoppers} shoppers"
    return None


@dataclass(slots=True)
class Play:
    """Everything the shopper loop produced."""

    blocks: list[Block] = field(default_factory=list)
    overall: Tally = field(default_factory=Tally)
    after_warmup: Tally = field(default_factory=Tally)
    picks: PickTally = field(default_factory=PickTally)
    outcomes: Counter[str] = field(default_factory=Counter)
    events_accepted: int = 0
    events_rejected: int = 0
    seconds: float = 0.0


async def _play(
    args: argparse.Namespace,
    targets: list[str],
    run_id: str,
    credentials: ClientCredentials = ClientCredentials(),  # noqa: B008  # frozen: one shared default is fine
) -> Play:
    """Drive every shopper through the service, printing a table row per block as it completes."""
    rules = segment_rules()
    single = best_single_action()
    factory = ShopperFactory(args.seed)
    shoppers = (factory.next() for _ in range(args.shoppers))
    play = Play()
    block = Tally()
    print(table_header(), flush=True)
    started = time.perf_counter()

    async for shopper, served in drive(targets, args.decision_point, shoppers, run_id, args.concurrency, credentials):
        for tally in (block, play.overall) + ((play.after_warmup,) if served.index >= args.warmup else ()):
            tally.add(shopper, served, rules, single)
        if served.index >= args.warmup:
            play.picks.add(shopper, served)
        play.outcomes[served.outcome] += 1
        play.events_accepted += served.accepted_events
        play.events_rejected += served.rejected_events
        if block.shoppers == args.block or served.index == args.shoppers - 1:
            play.blocks.append(Block(served.index + 1 - block.shoppers, served.index + 1, block.means()))
            print(table_row(play.blocks[-1]), flush=True)
            block = Tally()
    play.seconds = time.perf_counter() - started
    return play


@dataclass(slots=True)
class ServerEvidence:
    """What the embedded server says about the run: did it learn every decision, did it stop cleanly."""

    learned: dict[str, float]
    exit_code: int
    log_problems: list[str]


def _embedded_run(args: argparse.Namespace, run_id: str) -> tuple[Play, ServerEvidence]:
    with EmbeddedServer(args.decision_point) as server:
        print(f"embedded tailor serve on {server.target} (catalog: {args.decision_point})", flush=True)
        play = asyncio.run(_play(args, [server.target], run_id))
        # Every decision is learned when its window closes: wait for the last ones before stopping.
        learned = server.wait_learned(args.shoppers, timeout=REWARD_WINDOW_SECONDS + 10)
        exit_code = server.stop()
        return play, ServerEvidence(learned, exit_code, server.log_problems())


def _integrity_checks(play: Play, evidence: ServerEvidence | None, shoppers: int) -> list[Check]:
    """The loop itself: no event refused, and (embedded) every decision learned, rewarded ones by the rules."""
    sent = play.events_accepted + play.events_rejected
    checks = [Check("behaviour events accepted (share)", play.events_accepted / max(1, sent), 1.0)]
    if evidence is not None:
        rewarded = play.outcomes["purchase"] + play.outcomes["cart"]
        checks += [
            Check("decisions learned (share)", sum(evidence.learned.values()) / shoppers, 1.0),
            Check(
                "decisions learned from rule rewards / shoppers who carted or bought",
                evidence.learned.get("reward", 0.0) / max(1, rewarded),
                0.99,
            ),
            Check("embedded server exited 0 on SIGTERM", 1.0 if evidence.exit_code == 0 else 0.0, 1.0),
        ]
    return checks


def _command(args: argparse.Namespace) -> str:
    """The command line that reproduces this run (flags left at their defaults omitted)."""
    argv = ["tailor", "simulate"]
    for flag, default in _DEFAULTS.items():
        value = getattr(args, flag.replace("-", "_"))
        if value is not None and value != default:
            argv += [f"--{flag}", str(value)]
    return shlex.join(argv)


def _model_summary() -> dict[str, Any]:
    return {
        "intents": [
            {"name": i.name, "prior": i.prior, "best_action": i.best_action, "conversion": dict(i.conversion)}
            for i in INTENTS
        ],
        "demographics": DEMOGRAPHICS,
        "intent_accuracy_from_demographics": demographic_intent_accuracy(),
        "intent_accuracy_from_prior": max(i.prior for i in INTENTS),
        "cart_only_share": CART_ONLY_SHARE,
        "best_single_action": best_single_action(),
        "segment_rules_by_action": dict(Counter(segment_rules().values())),
    }


def _results(
    args: argparse.Namespace, play: Play, evidence: ServerEvidence | None, checks: list[tuple[str, Check]]
) -> dict[str, Any]:
    return {
        "command": _command(args),
        "config": {
            "shoppers": args.shoppers,
            "seed": args.seed,
            "warmup": args.warmup,
            "block": args.block,
            "concurrency": args.concurrency,
            "target": args.target or "embedded",
            "decision_point": args.decision_point,
        },
        "model": _model_summary(),
        "run": {
            "seconds": play.seconds,
            "shoppers_per_second": args.shoppers / play.seconds if play.seconds else 0.0,
            "outcomes": dict(play.outcomes),
            "events_accepted": play.events_accepted,
            "events_rejected": play.events_rejected,
            "learned": evidence.learned if evidence else None,
            "server_exit_code": evidence.exit_code if evidence else None,
            "server_log_problems": evidence.log_problems[:20] if evidence else None,
        },
        "overall": play.overall.means(),
        "after_warmup": play.after_warmup.means(),
        "service_picks_after_warmup": play.picks.shares(),
        "checks": [
            {"kind": kind, "name": c.name, "value": c.value, "minimum": c.minimum, "passed": c.passed}
            for kind, c in checks
        ],
        "checks_text": [f"{kind}: {c.line()}" for kind, c in checks],
        "passed": all(c.passed for _, c in checks),
    }


def _print_summary(results: Mapping[str, Any]) -> None:
    after = results["after_warmup"]
    print(f"\nafter the warm-up ({results['config']['shoppers'] - results['config']['warmup']} shoppers):")
    for key, label in (
        ("service", "service (expected)"),
        ("realized", "service (realized)"),
        ("random", "random"),
        ("single", "best single action"),
        ("segment", "best segment rule"),
        ("oracle", "oracle"),
    ):
        print(f"  {label:<20} {after[key]:.4f}")
    for line in results["checks_text"]:
        print(line)
    run = results["run"]
    print(f"{run['seconds']:.1f} s, {run['shoppers_per_second']:.0f} shoppers/s")
    print("PASS" if results["passed"] else "FAIL")


def run(args: argparse.Namespace) -> int:
    problem = _arg_problem(args) or missing_plot_extra()
    if problem:
        print(f"tailor simulate: {problem}", file=sys.stderr)
        return 2
    run_id = f"{args.seed}-{uuid.uuid4().hex[:8]}"  # fresh sessions even against a long-lived server
    try:
        if args.target:
            print(f"driving {args.target} (decision point {args.decision_point})", flush=True)
            targets = [t.strip() for t in args.target.split(",") if t.strip()]
            credentials = ClientCredentials.from_args(args)
            play, evidence = asyncio.run(_play(args, targets, run_id, credentials)), None
        else:
            play, evidence = _embedded_run(args, run_id)
    except ValueError as err:
        print(f"tailor simulate: {err}", file=sys.stderr)
        return 2
    except (grpc.RpcError, RuntimeError, OSError) as err:
        print(f"tailor simulate: the run failed: {err}", file=sys.stderr)
        return 2
    overall, after = play.overall.means(), play.after_warmup.means()
    checks = [("honesty", c) for c in honesty_checks(overall)]
    checks += [("measure", c) for c in measure_checks(after)]
    checks += [("integrity", c) for c in _integrity_checks(play, evidence, args.shoppers)]
    results = _results(args, play, evidence, checks)
    _print_summary(results)
    for path in write_results(args.out, results, play.blocks):
        print(f"wrote {path}")
    return 0 if results["passed"] else 1
