"""Decide handler time against raw VW on the same examples, in process.

    .venv/bin/python -m benchmarks.handler [--calls 3000] [--repeats 7]

The traffic of `benchmarks.load` (15 catalog actions, 20 context features, 2,000 shoppers whose sessions
hold behaviour events and what they were shown), run through the handler as the servicer runs it: a
parsed `DecideRequest` is validated, decided (session features, encoding, VW, sampling, decision log,
session update, metrics) and turned into a `DecideResponse`. The baseline, measured in the same run on
exactly the examples the handler built in that repeat: raw pylibvw parse + predict_multi + finish, the
least any Decide must do. Stages measured alone on the same inputs (validation, session features,
response) show where the rest goes. Repeats are interleaved; figures are medians.

Writes results.json and results.md beside this file (or --out).
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import random
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from vowpalwabbit import pyvw

from benchmarks._in_process import embedded_server, per_call_us, run_now
from benchmarks._results import publish
from benchmarks.load._traffic import DECISION_POINT, SESSIONS, decide_request, events, write_catalog
from server._cli import settle_gc
from server.api import _validation as validate
from server.api import decide_response
from server.sessions import intent_text
from tailor.v1 import decision_service_pb2 as pb

T = TypeVar("T")
HERE = Path(__file__).resolve().parent
_vw = pyvw.pylibvw.vw


async def measure(calls: int, repeats: int) -> dict[str, Any]:
    with embedded_server(write_catalog) as (app, config):
        service, limits = app.service, config.limits
        rng = random.Random(7)
        now = time.time()
        for session in range(SESSIONS):  # every shopper has browsed (10 events) and been shown a few layouts
            for _ in range(2):
                batch, _ = validate.tracked_events(events(rng, session), limits, now, 60.0, 3600.0)
                await app.sessions.track(batch, now)
            for _ in range(3):
                run_now(service.decide(validate.decide_query(decide_request(rng, session), limits)))
        settle_gc()  # as `tailor serve` does once it is up
        workspace = service.models.get(DECISION_POINT).policy._ws  # type: ignore[union-attr]
        sessions = app.session_store

        def handler(request: pb.DecideRequest) -> None:
            decide_response(run_now(service.decide(validate.decide_query(request, limits))))

        def raw_vw(example: str) -> None:
            examples = _vw._parse(workspace, example)
            _vw.predict_multi(workspace, examples)
            examples[0].get_action_scores()
            _vw._finish_example_multi_ex(workspace, examples)

        def validation(request: pb.DecideRequest) -> None:
            validate.decide_query(request, limits)

        def session_features(request: pb.DecideRequest) -> None:
            state = run_now(sessions.load(request.session_id, now))
            if state is not None:
                intent_text(state, now)

        def response(request: pb.DecideRequest) -> None:
            decide_response(decision)

        stages: dict[str, list[float]] = {
            "handler": [], "raw_vw": [], "validation": [], "session_features": [], "response": []
        }  # fmt: skip
        features = 0
        for _ in range(repeats):
            requests = [decide_request(rng, rng.randrange(SESSIONS)) for _ in range(calls)]
            first = len(app.decisions)  # type: ignore[arg-type]
            stages["handler"].append(per_call_us(handler, requests))
            records = list(app.decisions)[first:]  # type: ignore[call-overload]
            examples = [f"{r.shared}\n" + "\n".join(r.actions) for r in records]
            features = statistics.median(r.shared.count(" ") for r in records)
            decision = records[-1].decision
            stages["raw_vw"].append(per_call_us(raw_vw, examples))
            stages["validation"].append(per_call_us(validation, requests))
            stages["session_features"].append(per_call_us(session_features, requests))
            stages["response"].append(per_call_us(response, requests))
        return {
            "us_per_call": {k: statistics.median(v) for k, v in stages.items()},
            "runs": stages,
            "shared_features": features,
        }


def report(result: dict[str, Any]) -> str:
    us = result["us_per_call"]
    raw = us["raw_vw"]
    rest = us["handler"] - us["raw_vw"] - us["validation"] - us["session_features"] - us["response"]
    rows = [
        f"Measured {result['when']} on {result['machine']}; {result['args']}, medians.",
        f"Command: `{result['command']}`.",
        "",
        "| measure | µs per Decide | x raw VW |",
        "|---|---|---|",
        f"| raw VW parse + predict + finish, on the handler's own examples | {raw:.1f} | 1.00x |",
        f"| **Decide handler** (parsed request to built response) | **{us['handler']:.1f}** | "
        f"**{us['handler'] / raw:.2f}x** |",
        f"| of which validation | {us['validation']:.1f} | {us['validation'] / raw:.2f}x |",
        f"| of which session intent features | {us['session_features']:.1f} | {us['session_features'] / raw:.2f}x |",
        f"| of which response | {us['response']:.1f} | {us['response'] / raw:.2f}x |",
        f"| of which VW, context encoding, sampling, decision log, session update, metrics | {rest + raw:.1f} | "
        f"{(rest + raw) / raw:.2f}x |",
        "",
        f"Examples: 15 actions, {result['shared_features']:.0f} shared features (median) in the context and session "
        "namespaces, both crossed with the action namespace.",
    ]
    return "\n".join(rows) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=3000, help="Decide calls per repeat")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    result: dict[str, Any] = {
        "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, Python {platform.python_version()}",
        "command": ".venv/bin/python -m benchmarks.handler",
        "args": f"{args.calls} calls x {args.repeats} interleaved repeats",
    }
    result |= asyncio.run(measure(args.calls, args.repeats))
    publish(args.out, result, report(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
