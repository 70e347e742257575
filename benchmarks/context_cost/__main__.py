"""Measure the cost of session context (issue: session intent).

    .venv/bin/python -m benchmarks.context_cost

1. In process: Decide handler time (validated request -> decision -> response, as the servicer runs it)
   for sessions with 20 behaviour events against sessions with none, beside raw VW predict on the same
   example, medians over repeats measured in the same run.
2. Over gRPC against a real `tailor serve`: TrackEvents ingestion in events/s (batches of 1,000 and 100
   on one stream), and Decide round-trip latency with and without session features.

Writes results.json and results.md beside this file (or --out).
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import grpc
import yaml

from benchmarks._in_process import embedded_server, per_call_us, run_now
from benchmarks._results import publish
from server.api import _validation as validate
from server.api import decide_response
from server.core import EventKind, TrackedEvent
from server.state.decision_log import Decision
from server.tools.launcher import ServeProcess
from tailor import TailorClient
from tailor.v1 import decision_service_pb2 as pb

T = TypeVar("T")
HERE = Path(__file__).resolve().parent
DECISION_POINT = "layout"
KINDS: tuple[EventKind, ...] = ("page_view", "product_view", "click", "product_view", "search", "add_to_cart")
PB_KINDS = [pb.EventType.Value(f"EVENT_TYPE_{k.upper()}") for k in KINDS]


def write_catalog(folder: Path) -> None:
    actions = [{"id": f"a{i}", "features": {"style": f"s{i % 4}", "density": float(i)}} for i in range(12)]
    doc = {"decision_point": DECISION_POINT, "policy": {"reward_window_seconds": 600}, "actions": actions}
    (folder / f"{DECISION_POINT}.yaml").write_text(yaml.safe_dump(doc))


def context() -> dict[str, pb.FeatureValue]:
    """20 request features, half text, half numbers: a realistic gateway context."""
    return {f"f{j}": pb.FeatureValue(number=j * 0.5) if j % 2 else pb.FeatureValue(text=f"v{j}") for j in range(20)}


def session_events(session: str, now: float, count: int = 20) -> list[TrackedEvent]:
    return [
        TrackedEvent(
            session, KINDS[i % len(KINDS)], now - 60 + i, f"p{i}", f"c{i % 5}", 10.0 + i, 0.1, f"{session}-{i}"
        )
        for i in range(count)
    ]


def tracked(i: int, event_id: str) -> pb.SessionEvent:
    """One of 5,000 sessions' events: views, clicks, searches, carts over 97 products in 7 categories."""
    return pb.SessionEvent(
        session_id=f"s{i % 5000}",
        type=PB_KINDS[i % len(PB_KINDS)],
        product_id=f"p{i % 97}",
        category=f"c{i % 7}",
        price=10.0 + i % 50,
        discount=0.1,
        id=event_id,
    )


async def in_process(calls: int, repeats: int) -> dict[str, Any]:
    with embedded_server(write_catalog) as (app, config):
        service, limits = app.service, config.limits
        now = time.time()
        sessions = [f"warm-{i}" for i in range(500)]
        for s in sessions:
            await app.sessions.track(session_events(s, now), now)
        ctx = context()
        counter = iter(range(10**9))

        def decide(session: str) -> Decision:
            request = pb.DecideRequest(session_id=session, decision_point=DECISION_POINT, context=ctx)
            decision = run_now(service.decide(validate.decide_query(request, limits)))
            decide_response(decision)
            return decision

        def with_session(_: int) -> None:
            decide(sessions[next(counter) % len(sessions)])

        def without_session(_: int) -> None:
            decide(f"cold-{next(counter)}")

        model = app.models.get(DECISION_POINT)
        assert model is not None
        catalog = service.catalogs[DECISION_POINT]
        record = run_now(service.decisions.get(decide(sessions[0]).event_id))
        assert record is not None
        shared = record.shared

        def raw(_: int) -> None:
            model.policy.predict(shared, catalog.action_lines)

        runs: dict[str, list[float]] = {"raw_vw_predict": [], "without_session": [], "with_session": []}
        for _ in range(repeats):  # interleaved, so machine noise hits all three alike
            runs["raw_vw_predict"].append(per_call_us(raw, range(calls)))
            runs["without_session"].append(per_call_us(without_session, range(calls)))
            runs["with_session"].append(per_call_us(with_session, range(calls)))
        medians = {k: statistics.median(v) for k, v in runs.items()}
        return {"us_per_call": medians, "runs": runs, "session_features": shared.count(" ", shared.index("|s"))}


def grpc_run(events: int, latency_calls: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "catalogs"
        folder.mkdir()
        write_catalog(folder)
        with ServeProcess(folder, Path(tmp) / "data") as server, grpc.insecure_channel(server.target) as channel:
            client = TailorClient("", channel=channel, timeout=60)
            ingestion = {}
            for batch in (1000, 100):
                stream = [tracked(i, f"b{batch}-{i}") for i in range(events)]
                started = time.perf_counter()
                response = client.track_events(stream, batch=batch)
                seconds = time.perf_counter() - started
                assert response.accepted == events, response
                ingestion[f"batch_{batch}"] = events / seconds
            ctx = {k: (v.text if v.WhichOneof("value") == "text" else v.number) for k, v in context().items()}
            latency: dict[str, float] = {}
            for name, prefix, sessions in (("with_session", "s", 5000), ("without_session", "x", 10**9)):
                samples = []
                for i in range(latency_calls):
                    started = time.perf_counter()
                    client.decide(f"{prefix}{i % sessions}", DECISION_POINT, context=ctx)
                    samples.append((time.perf_counter() - started) * 1e6)
                samples.sort()
                latency[f"{name}_p50_us"] = samples[len(samples) // 2]
                latency[f"{name}_p99_us"] = samples[int(len(samples) * 0.99)]
            exit_code = server.stop()
        return {"events_per_second": ingestion, "decide_latency": latency, "exit_code": exit_code}


def report(result: dict[str, Any]) -> str:
    us = result["in_process"]["us_per_call"]
    ev = result["grpc"]["events_per_second"]
    lat = result["grpc"]["decide_latency"]
    rows = [
        "| measure | value | ratio |",
        "|---|---|---|",
        f"| raw VW predict (same example, 12 actions) | {us['raw_vw_predict']:.1f} µs | 1.00x |",
        f"| Decide handler, no session state | {us['without_session']:.1f} µs | "
        f"{us['without_session'] / us['raw_vw_predict']:.2f}x raw VW |",
        f"| Decide handler, session with 20 events ({result['in_process']['session_features']} features) | "
        f"{us['with_session']:.1f} µs | {us['with_session'] / us['without_session']:.2f}x no session |",
        f"| Decide over gRPC p50, no session / with session | {lat['without_session_p50_us']:.0f} / "
        f"{lat['with_session_p50_us']:.0f} µs | {lat['with_session_p50_us'] / lat['without_session_p50_us']:.2f}x |",
        f"| Decide over gRPC p99, no session / with session | {lat['without_session_p99_us']:.0f} / "
        f"{lat['with_session_p99_us']:.0f} µs | {lat['with_session_p99_us'] / lat['without_session_p99_us']:.2f}x |",
        f"| TrackEvents, batches of 1,000 | {ev['batch_1000']:,.0f} events/s | |",
        f"| TrackEvents, batches of 100 | {ev['batch_100']:,.0f} events/s | |",
    ]
    head = (
        f"Measured {result['when']} on {result['machine']}.\n"
        f"Command: `.venv/bin/python -m benchmarks.context_cost` ({result['args']}).\n\n"
    )
    return head + "\n".join(rows) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=3000, help="in-process calls per repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--events", type=int, default=100_000, help="events streamed per batch size")
    parser.add_argument("--latency-calls", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    result: dict[str, Any] = {
        "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, Python {platform.python_version()}",
        "args": f"calls {args.calls}, repeats {args.repeats}, events {args.events}, latency calls {args.latency_calls}",
    }
    result["in_process"] = asyncio.run(in_process(args.calls, args.repeats))
    result["grpc"] = grpc_run(args.events, args.latency_calls)
    table = report(result)
    publish(args.out, result, table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
