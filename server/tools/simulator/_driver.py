"""The gRPC side of `tailor simulate`: an embedded `tailor serve` to drive, and the shopper loop.

Each shopper goes through the service exactly as a gateway would send it: one TrackEvents with the
behaviour burst (timestamps in the recent past, ending at now), one Decide with the demographics as
request context and nothing else, then, if the shopper converts, TrackEvents add_to_cart + purchase
(server-stamped, so they fall inside the decision's window whatever the client's clock says). The
catalog's reward rules turn those events into the decision's reward; a shopper who does nothing
leaves the window to close with the default reward. The simulator never calls ReportRewards: the
whole loop, session context included, is the service's own.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import grpc
import yaml
from google.protobuf.timestamp_pb2 import Timestamp
from prometheus_client.parser import text_string_to_metric_families

from server.tools.client_flags import ClientCredentials
from server.tools.launcher import ServeProcess
from tailor import feature_map
from tailor.v1 import decision_service_pb2 as pb
from tailor.v1 import decision_service_pb2_grpc as pb_grpc

from ._shoppers import ACTIONS, LAYOUTS, BrowseEvent, Shopper

DEFAULT_DECISION_POINT = "sim_layout"
#: Long enough for the outcome events to land inside it, short enough that learning lags the
#: decisions by only a few hundred shoppers.
REWARD_WINDOW_SECONDS = 2.0

_KINDS: dict[str, pb.EventType.ValueType] = {
    "page_view": pb.EVENT_TYPE_PAGE_VIEW,
    "product_view": pb.EVENT_TYPE_PRODUCT_VIEW,
    "click": pb.EVENT_TYPE_CLICK,
    "search": pb.EVENT_TYPE_SEARCH,
    "add_to_cart": pb.EVENT_TYPE_ADD_TO_CART,
    "remove_from_cart": pb.EVENT_TYPE_REMOVE_FROM_CART,
    "purchase": pb.EVENT_TYPE_PURCHASE,
}


def catalog_document(decision_point: str = DEFAULT_DECISION_POINT) -> dict[str, object]:
    """The simulator's catalog: the home-layout actions, a short window, purchase-driven rewards."""
    return {
        "decision_point": decision_point,
        "description": "tailor simulate: home layouts for synthetic shoppers",
        "policy": {
            "reward_window_seconds": REWARD_WINDOW_SECONDS,
            "default_reward": 0.0,
            "reward_range": [0, 1],
            "aggregation": "max",
            "reward_rules": [{"event": "add_to_cart", "reward": 0.3}, {"event": "purchase", "reward": 1.0}],
        },
        "actions": [{"id": a, "features": dict(f), "payload": {"template": f"{a}_sim"}} for a, f in LAYOUTS.items()],
    }


class EmbeddedServer:
    """The simulator's own `tailor serve` (server/tools/launcher.py) on a fresh temporary directory.

    The catalog is written there, models and pending decisions go there, and everything is removed
    after the run. `exit_code` records how the graceful SIGTERM shutdown went (0 = clean).
    """

    def __init__(self, decision_point: str = DEFAULT_DECISION_POINT) -> None:
        self.decision_point = decision_point
        self._tmp = tempfile.TemporaryDirectory(prefix="tailor-simulate-")
        workdir = Path(self._tmp.name)
        catalogs = workdir / "catalogs"
        catalogs.mkdir()
        doc = catalog_document(decision_point)
        (catalogs / f"{decision_point}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
        self.process = ServeProcess(
            catalogs, workdir / "data", extra_args=["--host", "127.0.0.1"], log=workdir / "serve.log"
        )
        self.exit_code: int | None = None

    @property
    def target(self) -> str:
        return self.process.target

    def __enter__(self) -> EmbeddedServer:
        try:
            self.process.start()
        except BaseException:
            self._tmp.cleanup()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self._tmp.cleanup()

    def stop(self) -> int:
        if self.exit_code is None:
            self.exit_code = self.process.stop()
        return self.exit_code

    def learned_examples(self) -> dict[str, float]:
        """Decisions the service has learned so far, by source (reward / default), from its /metrics."""
        learned: dict[str, float] = {}
        for family in text_string_to_metric_families(self.process.metrics()):
            for sample in family.samples:
                if sample.name == "tailor_learned_examples_total":
                    source = sample.labels.get("source", "")
                    learned[source] = learned.get(source, 0.0) + sample.value
        return learned

    def wait_learned(self, expected: int, timeout: float) -> dict[str, float]:
        """Wait until the service has learned `expected` decisions (each one when its window closes)."""
        deadline = time.monotonic() + timeout
        learned = self.learned_examples()
        while sum(learned.values()) < expected and time.monotonic() < deadline:
            time.sleep(0.2)
            learned = self.learned_examples()
        return learned

    def log_problems(self) -> list[str]:
        return self.process.log_problems()


@dataclass(frozen=True, slots=True)
class Served:
    """What the service did for one shopper, and what came of it."""

    index: int
    action: str
    probability: float
    outcome: Literal["purchase", "cart", "none"]
    accepted_events: int
    rejected_events: int


def _event(session_id: str, e: BrowseEvent, now: float) -> pb.SessionEvent:
    stamp = Timestamp()
    stamp.FromNanoseconds(int((now - e.seconds_before) * 1e9))
    return pb.SessionEvent(
        session_id=session_id,
        type=_KINDS[e.kind],
        timestamp=stamp,
        product_id=e.product_id,
        category=e.category,
        price=e.price,
        discount=e.discount,
    )


def _outcome_events(session_id: str, shopper: Shopper, outcome: str) -> list[pb.SessionEvent]:
    """Add-to-cart (and purchase) after the decision; unstamped, so the server's clock places them."""
    product_id, category, price = shopper.basket
    kinds = [pb.EVENT_TYPE_ADD_TO_CART] + ([pb.EVENT_TYPE_PURCHASE] if outcome == "purchase" else [])
    return [
        pb.SessionEvent(session_id=session_id, type=k, product_id=product_id, category=category, price=price)
        for k in kinds
    ]


class ShopperStub:
    """The three calls a shopper makes, on one grpc.aio channel.

    The simulator uses asyncio rather than the blocking `TailorClient`: a blocking client-streaming
    call consumes its request iterator on a thread of its own, and with threads the client, not the
    server, was the bottleneck (about half the shoppers per second on 2 cores).
    """

    def __init__(
        self, channel: grpc.aio.Channel, timeout: float = 10.0, metadata: tuple[tuple[str, str], ...] | None = None
    ) -> None:
        self._stub = pb_grpc.DecisionServiceStub(channel)
        self._timeout = timeout
        self._metadata = metadata

    async def track(self, events: list[pb.SessionEvent]) -> pb.TrackEventsResponse:
        request = pb.TrackEventsRequest(events=events)
        response: pb.TrackEventsResponse = await self._stub.TrackEvents(
            iter([request]), timeout=self._timeout, metadata=self._metadata
        )
        return response

    async def decide(self, session_id: str, decision_point: str, shopper: Shopper) -> pb.DecideResponse:
        request = pb.DecideRequest(
            session_id=session_id,
            decision_point=decision_point,
            context=feature_map(shopper.demographics),
            event_id=f"{session_id}-d",
        )
        response: pb.DecideResponse = await self._stub.Decide(request, timeout=self._timeout, metadata=self._metadata)
        return response


async def serve_shopper(
    stub: ShopperStub, decision_point: str, run_id: str, shopper: Shopper, later: ShopperStub | None = None
) -> Served:
    """One shopper through the service: behaviour, decision, outcome (sent through `later` when given:
    against several replicas, the outcome arrives at another replica than the decision was made on)."""
    session_id = f"sim-{run_id}-{shopper.index}"
    now = time.time()
    tracked = await stub.track([_event(session_id, e, now) for e in shopper.events])
    decision = await stub.decide(session_id, decision_point, shopper)
    if decision.action_id not in ACTIONS:
        raise RuntimeError(
            f"decision point {decision_point!r} answered {decision.action_id!r}; "
            f"the simulator needs exactly the actions {', '.join(ACTIONS)}"
        )
    outcome = shopper.outcome(decision.action_id)
    accepted, rejected = tracked.accepted, tracked.rejected
    if outcome != "none":
        after = await (later or stub).track(_outcome_events(session_id, shopper, outcome))
        accepted += after.accepted
        rejected += after.rejected
    return Served(shopper.index, decision.action_id, decision.probability, outcome, accepted, rejected)


async def drive(
    targets: Sequence[str],
    decision_point: str,
    shoppers: Iterable[Shopper],
    run_id: str,
    concurrency: int,
    credentials: ClientCredentials = ClientCredentials(),  # noqa: B008  # frozen: one shared default is fine
) -> AsyncIterator[tuple[Shopper, Served]]:
    """Serve every shopper, `concurrency` at a time; yields (shopper, result) in shopper order.

    A few shoppers in flight keep the server busy while the client prepares the next ones. Only
    `concurrency` shoppers are ever in flight, started in index order, so the order the service sees
    stays close to shopper order and memory stays flat however long the run.
    """
    channels = [credentials.aio_channel(t) for t in targets]
    stubs = [ShopperStub(c, metadata=credentials.metadata) for c in channels]
    try:
        in_flight: deque[tuple[Shopper, asyncio.Task[Served]]] = deque()
        try:
            for shopper in shoppers:
                first = shopper.index % len(stubs)  # shoppers spread round-robin over the targets
                later = stubs[(first + 1) % len(stubs)]
                task = asyncio.create_task(serve_shopper(stubs[first], decision_point, run_id, shopper, later))
                in_flight.append((shopper, task))
                if len(in_flight) >= concurrency:
                    done, oldest = in_flight.popleft()
                    yield done, await oldest
            while in_flight:
                done, oldest = in_flight.popleft()
                yield done, await oldest
        finally:
            for _, task in in_flight:
                task.cancel()
    finally:
        for channel in channels:
            await channel.close(None)
