"""The in-process learner: joined decisions become `vw.learn` calls, in short slices on the event loop.

pylibvw holds the GIL and a VW workspace is not thread-safe, so a learning thread would buy no
parallelism and would need a lock around every predict. Instead the learner runs as a task on the
serving event loop and gives the loop back after at most `slice_seconds` (1 ms by default), so
serving latency never waits on a long learning burst, and serving uses each update at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Literal

from policies import VWPolicy, reward_to_cost
from server.core import Metrics, RateLimitedLog
from server.state.decision_log import DecisionRecord, Source
from server.state.models import ModelRegistry

from ._evidence import EvidenceRecorder
from ._series import ActionSeries

log = logging.getLogger("tailor.learner")
_limited = RateLimitedLog(log, seconds=10.0)  # per-example lines: at most one per kind every 10 s

LearnResult = Literal["learned", "held_out", "dropped"]


@dataclass(slots=True)
class LearnItem:
    record: DecisionRecord
    reward: float
    source: Source
    queued_at: float  # epoch seconds: when its window closed or its reward joined


class Learner:
    def __init__(
        self,
        models: ModelRegistry,
        metrics: Metrics,
        slice_seconds: float = 0.001,
        evidence: EvidenceRecorder | None = None,
        series: ActionSeries | None = None,
    ) -> None:
        self.models = models
        self.metrics = metrics
        self.slice_seconds = slice_seconds
        self.evidence = evidence  # the durable decision log (None: off)
        self.series = series  # the console's over-time series (None: off)
        self._queue: deque[LearnItem] = deque()
        self._wake = asyncio.Event()

    def __len__(self) -> int:
        return len(self._queue)

    def lag(self) -> tuple[int, float]:
        """(examples waiting, seconds the oldest has waited), for the learner-lag metrics."""
        queue = self._queue  # read from the scrape thread while the loop pops: an empty queue is an IndexError
        try:
            return len(queue), max(0.0, time.time() - queue[0].queued_at)
        except IndexError:
            return 0, 0.0

    def submit(self, record: DecisionRecord, reward: float, source: Source) -> None:
        self._queue.append(LearnItem(record, reward, source, time.time()))
        self._wake.set()

    async def run(self) -> None:
        """Learn whatever is queued, one slice at a time, until cancelled."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                self.learn_slice()
                await asyncio.sleep(0)

    def learn_slice(self) -> int:
        """Learn queued examples for at most one slice (at least one example); returns how many."""
        deadline = time.perf_counter() + self.slice_seconds
        done = 0
        queue = self._queue
        while queue:
            self._learn(queue.popleft())
            done += 1
            if time.perf_counter() >= deadline:
                break
        if self.evidence is not None:
            self.evidence.flush()  # the decision log's lines of this slice reach the file
        return done

    def drain(self) -> int:
        """Learn everything queued now (shutdown)."""
        done = 0
        while self._queue:
            self._learn(self._queue.popleft())
            done += 1
        return done

    def _learn(self, item: LearnItem) -> None:
        model = self.models.get(item.record.decision_point)
        record = item.record
        policy, baseline = (model.policy, model.baseline) if model is not None else (None, None)
        done = learn_example(policy, record, item.reward, item.source, self.metrics, baseline, self.series)
        if done == "learned":
            assert model is not None
            model.learned_since_snapshot += 1
            model.actions.learned(record.decision.action_id)
        if done != "dropped" and self.evidence is not None:
            self.evidence.learned(record, item.reward, item.source)
        # Learned: what remains retained only answers replays and statuses, so drop the example text.
        record.shared, record.actions = "", ()


def learn_example(
    policy: VWPolicy | None,
    record: DecisionRecord,
    reward: float,
    source: Source,
    metrics: Metrics,
    baseline: str | None = None,
    series: ActionSeries | None = None,
) -> LearnResult:
    """One `vw.learn` for a joined decision, counted; the one place both learners turn reward into cost, and
    where the learning-health estimates (live, uniform-random and `baseline` action values) and the per-arm
    reward counters (lift against the holdout) get their terms.

    Returns "held_out" for a holdout session's decision (counted, never learned), "dropped" if there is no
    model for it (its decision point was removed) or VW refused it."""
    if policy is None:
        _limited.warning("unknown", "dropping a learned example for unknown decision point %s", record.decision_point)
        return "dropped"
    cost = reward_to_cost(reward, *record.reward_range)
    decision = record.decision
    arm = decision.arm
    decisions, rewards, squares = metrics.arm_counters(record.decision_point, arm)
    decisions.inc()
    rewards.inc(-cost)  # cost is -(reward scaled to [0, 1])
    squares.inc(cost * cost)
    if arm == "holdout":
        return "held_out"
    try:
        policy.learn(record.shared, record.actions, record.chosen, cost, record.probability)
    except Exception:
        metrics.learn_errors.labels(record.decision_point).inc()
        _limited.log(logging.ERROR, "refused", "VW refused example for event %s", record.event_id, exc_info=True)
        return "dropped"
    learned, reward_scaled = metrics.learn_counters(record.decision_point, source)
    learned.inc()
    reward_scaled.inc(-cost)
    baseline_chosen = None
    if baseline is not None and any(action_id == baseline for action_id, _ in decision.ranking):
        baseline_chosen = decision.action_id == baseline
    metrics.value_estimates(record.decision_point).add(
        -cost, decision.probability, len(decision.ranking), baseline_chosen
    )
    if series is not None:
        candidates = len(decision.ranking)
        series.add(
            record.decision_point,
            decision.action_id,
            -cost,
            decision.probability,
            candidates,
            baseline_chosen,
            time.time(),
        )
    return "learned"
