"""The transport floor: a grpc.aio DecisionService that answers every Decide with a canned response of
the size Tailor's would have (same candidates, same payload), acknowledges events and rewards, and does
nothing else. Run: python -m benchmarks.load._echo --port PORT [--vw | --redis-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import yaml

from server.state import redis_connect, redis_pipeline
from tailor.v1 import decision_service_pb2 as pb
from tailor.v1 import decision_service_pb2_grpc as pb_grpc

from ._traffic import ACTIONS, vw_example

Ctx = grpc.aio.ServicerContext[Any, Any]


def canned_response() -> pb.DecideResponse:
    p = 1.0 / len(ACTIONS)
    return pb.DecideResponse(
        event_id="0123456789abcdef0123456789abcdef",
        action_id=ACTIONS[0],
        probability=p,
        ranking=[pb.RankedAction(action_id=a, probability=p) for a in ACTIONS],
        payload={"template": f"{ACTIONS[0]}_v1"},
        model_version="abcdef12.0",
    )


def accepted(request: pb.ReportRewardsRequest) -> pb.ReportRewardsResponse:
    """Every reward of the message accepted."""
    return pb.ReportRewardsResponse(
        results=[pb.RewardResult(event_id=r.event_id, status=pb.REWARD_STATUS_ACCEPTED) for r in request.rewards]
    )


class Echo(pb_grpc.DecisionServiceServicer):
    def __init__(self) -> None:
        self.response = canned_response()

    async def Decide(self, request: pb.DecideRequest, context: Ctx) -> pb.DecideResponse:
        return self.response

    async def TrackEvents(
        self, request_iterator: AsyncIterator[pb.TrackEventsRequest], context: Ctx
    ) -> pb.TrackEventsResponse:
        accepted = 0
        async for request in request_iterator:
            accepted += len(request.events)
        return pb.TrackEventsResponse(accepted=accepted)

    async def ReportRewards(
        self, request_iterator: AsyncIterator[pb.ReportRewardsRequest], context: Ctx
    ) -> AsyncIterator[pb.ReportRewardsResponse]:
        async for request in request_iterator:
            yield accepted(request)

    async def Activate(self, request: pb.ActivateRequest, context: Ctx) -> pb.ActivateResponse:
        return pb.ActivateResponse()

    async def GetSession(self, request: pb.GetSessionRequest, context: Ctx) -> pb.GetSessionResponse:
        return pb.GetSessionResponse(session_id=request.session_id)

    async def DeleteSession(self, request: pb.DeleteSessionRequest, context: Ctx) -> pb.DeleteSessionResponse:
        return pb.DeleteSessionResponse()


class EchoWithVW(Echo):
    """Echo plus the VW work a decision cannot do without, and nothing else: raw pylibvw predict and one
    learn per decision, on examples of the size Tailor builds for this traffic (already encoded, cycling
    through `EXAMPLES` distinct ones so VW's weight lookups miss caches as they do on live traffic).
    Its throughput is the ceiling for any decision service on this transport that decides and learns
    with VW in the serving process."""

    EXAMPLES = 512

    def __init__(self) -> None:
        super().__init__()
        from policies import LearningSpec, VWPolicy

        self.policy = VWPolicy(LearningSpec())
        self.examples = [vw_example(seed) for seed in range(self.EXAMPLES)]
        self.text = "\n".join(self.examples[0][1])
        self.decided = 0

    async def Decide(self, request: pb.DecideRequest, context: Ctx) -> pb.DecideResponse:
        shared, actions = self.examples[self.decided % self.EXAMPLES]
        self.policy.predict(shared, actions, self.text)
        self.policy.learn(shared, actions, self.decided % len(actions), -0.3, 0.2)
        self.decided += 1
        return self.response


class ContractFloor(EchoWithVW):
    """The contract floor: echo+VW plus the least any implementation of the v1 contract must do per call, as
    cheaply as Python allows and with none of Tailor's code but its VW wrapper: check the bearer key (one
    SHA-256 and a dict lookup), read the request's context map into VW tokens (no escaping, no validation),
    add a per-session feature kept up by TrackEvents (one counter per session), predict, draw, answer with
    every candidate ranked, keep the decision for the reward join (a dict) and append a durable log record
    (one JSON array per decision with the VW text, exportable as DSJSON later), learn; ReportRewards joins
    each reward with a dict lookup. What Tailor spends beyond this is the cost of doing it carefully."""

    def __init__(self, log_path: str, keys: dict[str, str]) -> None:
        super().__init__()
        from policies import action_line

        from ._traffic import action_features

        self.keys = keys  # sha256 hex -> key name
        self.lines = tuple(action_line(a, action_features(i)) for i, a in enumerate(ACTIONS))
        self.action_text = "\n".join(self.lines)
        self.payload = {a: {"template": f"{a}_v1"} for a in ACTIONS}
        self.sessions: dict[str, int] = {}
        self.open: dict[str, tuple[str, int, float]] = {}
        self.log = open(log_path, "a", buffering=1 << 16)  # noqa: SIM115 (open for the server's life)
        self.rng = random.Random(7)

    def _authorized(self, context: Ctx) -> bool:
        for key, value in context.invocation_metadata() or ():
            if key == "authorization":
                token = value.decode() if isinstance(value, bytes) else value
                return hashlib.sha256(token.partition(" ")[2].encode()).hexdigest() in self.keys
        return False

    async def Decide(self, request: pb.DecideRequest, context: Ctx) -> pb.DecideResponse:
        if not self._authorized(context):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "unknown key")
        tokens = [
            f"{k}={v.text}" if v.WhichOneof("value") == "text" else f"{k}:{v.number:.9g}"
            for k, v in request.context.items()
        ]
        shared = f"shared |c {' '.join(tokens)} |s events:{self.sessions.get(request.session_id, 0)}"
        pmf = self.policy.predict(shared, self.lines, self.action_text)
        chosen = self.rng.choices(range(len(pmf)), pmf)[0]
        event_id = os.urandom(16).hex()
        ranking = sorted(zip(ACTIONS, pmf, strict=True), key=lambda r: r[1], reverse=True)
        self.open[event_id] = (shared, chosen, pmf[chosen])
        if len(self.open) > 100_000:
            self.open.pop(next(iter(self.open)))
        self.log.write(json.dumps([event_id, request.session_id, shared, chosen, pmf[chosen], time.time()]) + "\n")
        self.policy.learn(shared, self.lines, chosen, -0.3, pmf[chosen])
        return pb.DecideResponse(
            event_id=event_id,
            action_id=ACTIONS[chosen],
            probability=pmf[chosen],
            ranking=[{"action_id": a, "probability": p} for a, p in ranking],  # type: ignore[misc]
            payload=self.payload[ACTIONS[chosen]],
            model_version="floor.0",
        )

    async def TrackEvents(
        self, request_iterator: AsyncIterator[pb.TrackEventsRequest], context: Ctx
    ) -> pb.TrackEventsResponse:
        if not self._authorized(context):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "unknown key")
        accepted = 0
        sessions = self.sessions
        async for request in request_iterator:
            for event in request.events:
                sessions[event.session_id] = sessions.get(event.session_id, 0) + 1
            accepted += len(request.events)
        return pb.TrackEventsResponse(accepted=accepted)

    async def ReportRewards(
        self, request_iterator: AsyncIterator[pb.ReportRewardsRequest], context: Ctx
    ) -> AsyncIterator[pb.ReportRewardsResponse]:
        if not self._authorized(context):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "unknown key")
        async for request in request_iterator:
            for r in request.rewards:
                self.open.pop(r.event_id, None)
            yield accepted(request)


class EchoWithRedis(Echo):
    """The Redis floor: echo plus the Redis round trips a Redis-mode replica makes, with payloads of their size,
    and nothing else. Per Decide: one pipelined read (the session's hash, the event id's decision) and one
    pipelined write (the decision's hash with a ~2 KB document and its expiry, the session's last-decision
    field); per TrackEvents or ReportRewards message, one pipelined write. What a replica spends beyond this is
    Tailor's own work, not Redis'."""

    def __init__(self, url: str, prefix: str) -> None:
        super().__init__()

        self.client = redis_connect(url)  # as a replica makes it: the same lean pipelines
        self.prefix = prefix
        shared, actions = vw_example(0)
        self.document = (shared + "\n" + "\n".join(actions)).encode()  # a logged decision's size
        self.decided = 0

    async def Decide(self, request: pb.DecideRequest, context: Ctx) -> pb.DecideResponse:
        session = f"{self.prefix}:s:{request.session_id}"
        self.decided += 1
        decision = f"{self.prefix}:{{d{self.decided % 16}}}:e:{self.decided}"
        async with redis_pipeline(self.client) as pipe:  # the client path a replica's Decide uses
            pipe.hgetall(session)
            pipe.execute_command("EXISTS", decision)
            await pipe.execute()
        async with redis_pipeline(self.client) as pipe:
            pipe.execute_command("HSET", decision, "doc", self.document, "learned", "0", "window", "30")
            pipe.execute_command("PEXPIRE", decision, 630_000)
            pipe.execute_command("HSET", session, "last", decision)
            pipe.execute_command("PEXPIRE", session, 1_800_000)
            await pipe.execute()
        return self.response

    async def TrackEvents(
        self, request_iterator: AsyncIterator[pb.TrackEventsRequest], context: Ctx
    ) -> pb.TrackEventsResponse:
        accepted = 0
        async for request in request_iterator:
            async with self.client.pipeline(transaction=False) as pipe:
                for event in request.events:
                    pipe.hincrby(f"{self.prefix}:s:{event.session_id}", "events", 1)
                await pipe.execute()
            accepted += len(request.events)
        return pb.TrackEventsResponse(accepted=accepted)

    async def ReportRewards(
        self, request_iterator: AsyncIterator[pb.ReportRewardsRequest], context: Ctx
    ) -> AsyncIterator[pb.ReportRewardsResponse]:
        async for request in request_iterator:
            async with self.client.pipeline(transaction=False) as pipe:
                for r in request.rewards:
                    pipe.hset(f"{self.prefix}:r:{r.event_id}", "reward", r.value)
                await pipe.execute()
            yield accepted(request)


async def serve(port: int, vw: bool, redis_url: str | None = None, contract: str | None = None) -> None:
    # Tailor's server options: no SO_REUSEPORT, so two servers can never share a port by accident.
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    servicer: Echo
    if contract:
        keys = {entry["sha256"]: entry["name"] for entry in yaml.safe_load(Path(contract).read_text())["keys"]}
        servicer = ContractFloor(str(Path(contract).with_suffix(".log")), keys)
    else:
        servicer = EchoWithRedis(redis_url, "floor") if redis_url else EchoWithVW() if vw else Echo()
    pb_grpc.add_DecisionServiceServicer_to_server(servicer, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--vw", action="store_true", help="also predict and learn with VW per decision")
    parser.add_argument("--redis-url", help="also make a Redis-mode replica's round trips (the Redis floor)")
    parser.add_argument("--contract", metavar="KEYS", help="the contract floor, with this key file (`ContractFloor`)")
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.vw, args.redis_url, args.contract))


if __name__ == "__main__":
    main()
