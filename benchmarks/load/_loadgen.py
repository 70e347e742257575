"""The load generator, in a process of its own: python -m benchmarks.load._loadgen TARGETS MODE N SECONDS

MODE closed: N shoppers in flight, each looping events (every 4th decision), Decide, reward (30%).
MODE open: Decide started at a fixed rate of N per second, whatever the server's pace, latency counted
from the scheduled start (so queueing shows), with the same events and rewards mix.
TARGETS is one host:port, or several separated by commas (replicas sharing state in Redis): shoppers are
spread over them round-robin, each with one channel and one rewards stream per target.
Prints one JSON object: decisions/s, Decide latency percentiles, events/s, rewards/s.
With TAILOR_API_KEY set, every call carries `authorization: Bearer <key>`.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import time
from itertools import cycle
from typing import Any

import grpc

from tailor.v1 import decision_service_pb2 as pb
from tailor.v1 import decision_service_pb2_grpc as pb_grpc

from ._traffic import EVENTS_EVERY, REWARD_SHARE, SESSIONS, decide_request, events

Stub = Any  # a grpc.aio stub: the generated stub's types describe the blocking one
_KEY = os.environ.get("TAILOR_API_KEY")
METADATA = (("authorization", f"Bearer {_KEY}"),) if _KEY else None


class Rewards:
    """One ReportRewards stream shared by every shopper: a writer task and a reader task."""

    def __init__(self, stub: Stub) -> None:
        self.call: Any = stub.ReportRewards(metadata=METADATA)
        self.queue: asyncio.Queue[pb.ReportRewardsRequest | None] = asyncio.Queue()
        self.sent = self.answered = 0
        self.tasks = [asyncio.create_task(self._write()), asyncio.create_task(self._read())]

    def send(self, event_id: str, index: int) -> None:
        reward = pb.Reward(event_id=event_id, value=1.0, reward_id=f"r{index}")
        self.queue.put_nowait(pb.ReportRewardsRequest(rewards=[reward]))
        self.sent += 1

    async def _write(self) -> None:
        while (request := await self.queue.get()) is not None:
            await self.call.write(request)
        await self.call.done_writing()

    async def _read(self) -> None:
        async for _ in self.call:
            self.answered += 1

    async def close(self) -> None:
        self.queue.put_nowait(None)
        await asyncio.wait_for(asyncio.gather(*self.tasks), timeout=30)


class Target:
    """One server: a channel, its stub and its rewards stream."""

    def __init__(self, address: str) -> None:
        self.channel = grpc.aio.insecure_channel(address)
        self.stub: Stub = pb_grpc.DecisionServiceStub(self.channel)
        self.rewards = Rewards(self.stub)

    async def close(self) -> None:
        await self.rewards.close()
        await self.channel.close(grace=None)


class Shopper:
    def __init__(self, stub: Stub, rewards: Rewards, seed: int) -> None:
        self.stub = stub
        self.rewards = rewards
        self.rng = random.Random(seed)
        self.events = 0

    async def step(self, index: int, latencies: list[float], started: float | None = None) -> None:
        session = self.rng.randrange(SESSIONS)
        if index % EVENTS_EVERY == 0:
            response = await self.stub.TrackEvents(iter([events(self.rng, session)]), metadata=METADATA)
            self.events += response.accepted
        t0 = started if started is not None else time.perf_counter()
        decision = await self.stub.Decide(decide_request(self.rng, session), metadata=METADATA)
        latencies.append(time.perf_counter() - t0)
        if self.rng.random() < REWARD_SHARE:
            self.rewards.send(decision.event_id, index)


async def closed(targets: list[Target], n: int, seconds: float) -> tuple[list[float], int]:
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    shoppers = [Shopper(t.stub, t.rewards, seed) for seed, t in zip(range(n), cycle(targets), strict=False)]

    async def loop(shopper: Shopper, offset: int) -> None:
        i = offset
        while time.perf_counter() < deadline:
            await shopper.step(i, latencies)
            i += n

    await asyncio.gather(*(loop(s, k) for k, s in enumerate(shoppers)))
    return latencies, sum(s.events for s in shoppers)


async def open_loop(targets: list[Target], rate: int, seconds: float) -> tuple[list[float], int]:
    latencies: list[float] = []
    shoppers = [Shopper(t.stub, t.rewards, k + 1) for k, t in enumerate(targets)]
    start = time.perf_counter()
    tasks = []
    for i in range(int(rate * seconds)):
        at = start + i / rate
        delay = at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(shoppers[i % len(shoppers)].step(i, latencies, started=at)))
    await asyncio.gather(*tasks)
    return latencies, sum(s.events for s in shoppers)


def percentile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))] if sorted_values else float("nan")


async def main(addresses: str, mode: str, n: int, seconds: float) -> dict[str, float]:
    targets = [Target(address) for address in addresses.split(",")]
    started = time.perf_counter()
    if mode == "closed":
        latencies, tracked = await closed(targets, n, seconds)
    else:
        latencies, tracked = await open_loop(targets, n, seconds)
    elapsed = time.perf_counter() - started
    for target in targets:
        await target.close()
    latencies.sort()
    return {
        "decisions": len(latencies),
        "seconds": elapsed,
        "decisions_per_s": len(latencies) / elapsed,
        "p50_ms": percentile(latencies, 0.5) * 1e3,
        "p90_ms": percentile(latencies, 0.9) * 1e3,
        "p99_ms": percentile(latencies, 0.99) * 1e3,
        "events_per_s": tracked / elapsed,
        "rewards_per_s": sum(t.rewards.answered for t in targets) / elapsed,
    }


if __name__ == "__main__":
    target, mode, n, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    print(json.dumps(asyncio.run(main(target, mode, n, seconds))))
