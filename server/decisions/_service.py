"""The decision service: a validated Decide query becomes a sampled, logged decision.

Path: candidates (catalog actions, narrowed or excluded, or the request's own actions) -> shared
features -> the decision point's VW policy -> PMF -> draw seeded by the event id -> decision log.
Everything here is synchronous and short; the servicer calls it straight from the event loop.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from policies import action_line, apply_floor, encode_features, in_holdout, sample_index, shared_line
from server.catalogs import Catalog
from server.core import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    Limits,
    Metrics,
    NotFound,
    RateLimitedLog,
    ResourceExhausted,
    Unavailable,
    invalid,
)
from server.learning import RewardJoiner
from server.sessions import SessionContext, intent_text
from server.state import DecideState
from server.state.decision_log import Arm, Decision, DecisionLog, DecisionRecord
from server.state.models import ModelRegistry

Features = list[tuple[str, "str | float"]]

log = logging.getLogger("tailor.decisions")
#: Shared state that cannot be read or written: Decide answers without it (and counts it).
_FAIL_OPEN = (Unavailable, ResourceExhausted)


@dataclass(slots=True)
class RequestAction:
    id: str
    features: Features


@dataclass(slots=True)
class DecideQuery:
    """A Decide request after validation: plain Python values, limits already enforced."""

    session_id: str
    decision_point: str
    context: Features = field(default_factory=list)
    actions: list[RequestAction] = field(default_factory=list)
    candidate_action_ids: Sequence[str] = ()
    excluded_action_ids: Sequence[str] = ()
    event_id: str = ""
    defer_activation: bool = False


class DecisionService:
    def __init__(
        self,
        catalogs: Mapping[str, Catalog],
        models: ModelRegistry,
        decisions: DecisionLog,
        state: DecideState,
        joiner: RewardJoiner,
        sessions: SessionContext,
        metrics: Metrics,
        limits: Limits,
        grace_seconds: float,
    ) -> None:
        self.models = models
        self.decisions = decisions
        self.state = state
        self.joiner = joiner
        self.sessions = sessions
        self.metrics = metrics
        self._log = RateLimitedLog(log, seconds=10.0)
        self.limits = limits
        self.grace_seconds = grace_seconds
        self.catalogs: Mapping[str, Catalog] = {}
        self._event_ids = EventIds()
        self.use_catalogs(catalogs)

    def use_catalogs(self, catalogs: Mapping[str, Catalog]) -> None:
        """Serve these catalogs from now on (start-up and reloads); models follow their learning flags."""
        self.models.sync(catalogs)
        self.catalogs = dict(catalogs)
        self.sessions.use_catalogs(self.catalogs)
        m = self.metrics
        for name in self.catalogs:
            m.touch_decision_point(name)
        self._stats = {name: m.decide_stats(name) for name in self.catalogs}

    async def decide(self, q: DecideQuery) -> Decision:
        started = time.perf_counter()
        catalog = self.catalogs.get(q.decision_point)
        if catalog is None:
            raise NotFound(f"unknown decision point {q.decision_point!r}; known: {sorted(self.catalogs)}")
        ids, lines, text = self._candidates(catalog, q)
        now = time.time()
        try:
            known, session = await self.state.read(q.session_id, q.event_id, now)
        except _FAIL_OPEN as err:  # Decide never fails for shared state: it answers without it, and counts
            self.metrics.fail_open.labels("read").inc()
            self._log.warning(
                "read",
                "Decide answered without the session (shared state read failed: %s)",
                err,
                extra={"event": "fail_open", "step": "read", "decision_point": q.decision_point},
            )
            known, session = None, None
        if known is not None:
            return self._replay(known, q)
        event_id = q.event_id or self._event_ids.next()
        model = self.models.get(q.decision_point)
        if model is None:  # models.sync serves one for every catalog
            raise RuntimeError(f"no model for decision point {q.decision_point}")
        session_text = intent_text(session, now) if session is not None else ""
        shared = shared_line(encode_features(q.context), session_text)
        policy = catalog.policy
        arm: Arm = "policy"
        model_action_id, model_probability = "", 0.0
        if policy.holdout_share and in_holdout(q.session_id, policy.holdout_share):
            arm = "holdout"  # the baseline, surely; the model is not asked
            pmf = [0.0] * len(ids)
            pmf[_baseline_index(catalog, ids)] = 1.0
        else:
            pmf = model.policy.predict(shared, lines, text)
            if model.actions.under_floor and not q.actions:  # catalog actions the model has barely learned
                pmf = self._floor(catalog, model.actions.under_floor, ids, pmf)
            if policy.mode == "apprentice":
                arm = "apprentice"
                pmf, model_action_id, model_probability = self._apprentice(catalog, ids, pmf, event_id)
        chosen = sample_index(pmf, event_id)
        # sorted() is stable, also with reverse=True: ties keep candidate order
        ranking = tuple(sorted(zip(ids, pmf, strict=True), key=_probability, reverse=True))
        action_id = ids[chosen]
        decision = Decision(
            event_id=event_id,
            action_id=action_id,
            probability=pmf[chosen],
            ranking=ranking,
            payload=catalog.payload(action_id),  # the catalog's own mapping: never mutated
            model_version=model.version,
            arm=arm,
            model_action_id=model_action_id,
            model_probability=model_probability,
        )
        record = DecisionRecord(
            decision=decision,
            session_id=q.session_id,
            decision_point=q.decision_point,
            shared=shared,
            actions=lines,
            chosen=chosen,
            created_at=now,
            window_seconds=policy.reward_window_seconds,
            aggregation=policy.aggregation,
            reward_range=policy.reward_range,
            default_reward=policy.default_reward,
            grace_seconds=self.grace_seconds,
            activated_at=None if q.defer_activation else now,
            baseline=catalog.baseline_action,
        )
        try:
            logged = await self.state.write(record, action_id)
        except _FAIL_OPEN as err:
            self.metrics.fail_open.labels("write").inc()
            self._log.warning(
                "write",
                "a decision was served but not logged, so never learned: %s",
                err,
                extra={"event": "fail_open", "step": "write", "decision_point": q.decision_point},
            )
            logged = False
        if not logged:
            self.metrics.decisions_unlearnable.labels(q.decision_point).inc()
        self._stats[q.decision_point].observe(time.perf_counter() - started)
        return decision

    def _apprentice(
        self, catalog: Catalog, ids: Sequence[str], pmf: list[float], event_id: str
    ) -> tuple[list[float], str, float]:
        """Apprentice mode: the model's own draw (reported, and counted as agreeing with the baseline or not),
        and the distribution actually served: the baseline, mixed with the model's policy at
        `apprentice_exploration`, so `probability` stays the true probability of what was served."""
        own = sample_index(pmf, event_id)
        base = _baseline_index(catalog, ids)
        self.metrics.apprentice_decisions.labels(catalog.name, "true" if own == base else "false").inc()
        share = catalog.policy.apprentice_exploration
        served = [share * p for p in pmf]
        served[base] += 1.0 - share
        return served, ids[own], pmf[own]

    def _floor(self, catalog: Catalog, under: frozenset[str], ids: Sequence[str], pmf: list[float]) -> list[float]:
        floor = catalog.policy.new_action_floor.probability
        lifted = [i for i, a in enumerate(ids) if a in under]
        if floor <= 0 or all(pmf[i] >= min(floor, 1 / len(pmf)) for i in lifted):
            return pmf
        self.metrics.decisions_floored.labels(catalog.name).inc()
        return apply_floor(pmf, lifted, floor)

    def _replay(self, record: DecisionRecord, q: DecideQuery) -> Decision:
        if record.session_id != q.session_id or record.decision_point != q.decision_point:
            raise invalid("event_id", "already used by a decision of another session or decision point")
        self.metrics.decisions_replayed.labels(q.decision_point).inc()
        return record.decision

    def _candidates(self, catalog: Catalog, q: DecideQuery) -> tuple[tuple[str, ...], tuple[str, ...], str | None]:
        """Candidate action ids and their VW lines, in candidate order, and the lines' joined text when it
        is already rendered (the whole catalog)."""
        scheduled = catalog.windows is not None and not q.actions
        if catalog.action_ids and not (scheduled or q.actions or q.candidate_action_ids or q.excluded_action_ids):
            return catalog.action_ids, catalog.action_lines, catalog.action_text  # the common case
        text: str | None = None
        if q.actions:
            ids = tuple(a.id for a in q.actions)  # unique: checked with the request
            lines = tuple(action_line(a.id, dict(a.features)) for a in q.actions)
            index: Mapping[str, int] = {a: i for i, a in enumerate(ids)}
        elif scheduled:  # only the actions active now (schedules, pauses); cached until the next boundary
            active = catalog.active(time.time())
            ids, lines, index, text = active.ids, active.lines, active.index, active.text
        else:
            ids, lines, index, text = catalog.action_ids, catalog.action_lines, catalog.index, catalog.action_text
        picked: list[int]
        if q.candidate_action_ids:
            unknown = [
                FieldViolation(f"candidate_action_ids[{i}]", f"{a!r} is not a candidate of {catalog.name}")
                for i, a in enumerate(q.candidate_action_ids)
                if a not in index and (q.actions or a not in catalog.index)  # inactive ones are dropped below
            ]
            if unknown:
                raise InvalidArgument(unknown)
            picked = list(dict.fromkeys(index[a] for a in q.candidate_action_ids if a in index))
        else:
            picked = list(range(len(ids)))
        if q.excluded_action_ids:
            excluded = {index[a] for a in q.excluded_action_ids if a in index}
            picked = [i for i in picked if i not in excluded]
        if not picked:
            if scheduled:
                raise FailedPrecondition(
                    f"no action of {catalog.name} is a candidate now: the rest are paused or outside their "
                    "active_from / active_until, or left out by candidate_action_ids and excluded_action_ids"
                )
            if not ids:
                raise FailedPrecondition(
                    f"decision point {catalog.name} has no catalog actions; supply candidates in `actions`"
                )
            raise FailedPrecondition("no candidate action is left after candidate_action_ids and excluded_action_ids")
        if len(picked) == len(ids):
            return ids, lines, text
        return tuple(ids[i] for i in picked), tuple(lines[i] for i in picked), None


class EventIds:
    """Random 128-bit event ids (32 hex digits) from the OS's CSPRNG, 256 per system call: unguessable, so
    a client cannot forge rewards for other shoppers' decisions, and ~5x cheaper than os.urandom(16)."""

    _CHUNK = 4096

    def __init__(self) -> None:
        self._pool = b""
        self._at = 0

    def next(self) -> str:
        at = self._at
        if at >= len(self._pool):
            self._pool, at = os.urandom(self._CHUNK), 0
        self._at = at + 16
        return self._pool[at : at + 16].hex()


def _baseline_index(catalog: Catalog, ids: Sequence[str]) -> int:
    """The baseline among the candidates: the catalog's baseline action, or the first candidate when it is not one
    (request-supplied actions, or the baseline paused or narrowed away)."""
    baseline = catalog.baseline_action
    for i, action_id in enumerate(ids):
        if action_id == baseline:
            return i
    return 0


def _probability(ranked: tuple[str, float]) -> float:
    return ranked[1]
