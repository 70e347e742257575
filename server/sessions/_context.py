"""Session context: behaviour events in, intent features out, rewards derived by catalog rules.

TrackEvents folds each validated event into its session's state; an event a catalog's reward rules
price (add-to-cart 0.3, purchase 1.0, ...) also credits every open decision of that session whose
window covers the event, each decision point by its own rules, through the same joiner as explicit
rewards, so a decision is still learned exactly once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from server.catalogs import Catalog
from server.core import Metrics, TrackedEvent
from server.learning import RewardJoiner
from server.state.decision_log import DecisionLog
from server.state.sessions import OpenDecision, SessionStore

from ._intent import Feature, intent_features


class SessionContext:
    def __init__(self, store: SessionStore, decisions: DecisionLog, joiner: RewardJoiner, metrics: Metrics) -> None:
        self.store = store
        self.decisions = decisions
        self.joiner = joiner
        self.metrics = metrics
        self._catalogs: Mapping[str, Catalog] = {}
        self._priced: frozenset[str] = frozenset()  # event kinds some catalog's reward rules price
        self._accepted = metrics.session_events.labels("accepted")
        self._duplicate = metrics.session_events.labels("duplicate")

    def use_catalogs(self, catalogs: Mapping[str, Catalog]) -> None:
        """Credit rewards by these catalogs' rules from now on (start-up and reloads)."""
        self._catalogs = catalogs
        self._priced = frozenset(kind for catalog in catalogs.values() for kind in catalog.rules)

    async def track(self, events: Sequence[TrackedEvent], now: float) -> int:
        """Fold validated events into their sessions; returns how many were new (not duplicates)."""
        by_session: dict[str, list[TrackedEvent]] = {}
        for event in events:
            by_session.setdefault(event.session_id, []).append(event)
        applied_total = 0
        folded = await self.store.apply_batch(by_session, now)
        for session_id, session_events in by_session.items():
            applied, open_decisions = folded[session_id]
            applied_total += len(applied)
            self._accepted.inc(len(applied))
            self._duplicate.inc(len(session_events) - len(applied))
            if open_decisions:
                priced = self._priced  # an event no rule prices credits nothing: skip the open decisions
                for i in applied:
                    if session_events[i].kind in priced:
                        open_decisions = await self._credit(session_id, open_decisions, session_events[i])
        return applied_total

    async def _credit(
        self, session_id: str, open_decisions: list[OpenDecision], event: TrackedEvent
    ) -> list[OpenDecision]:
        """Derive rewards for the session's open decisions from one event; returns those still open."""
        live: list[OpenDecision] = []
        done: list[OpenDecision] = []
        catalogs = self._catalogs
        for open_decision in open_decisions:
            catalog = catalogs.get(open_decision.decision_point)
            rule = catalog.rules.get(event.kind) if catalog is not None else None
            if rule is None or event.timestamp < open_decision.decided_at:
                live.append(open_decision)  # nothing to credit from this event: no lookup needed
                continue
            record = await self.decisions.get(open_decision.event_id)
            if record is None or record.learned:
                done.append(open_decision)  # nothing more to credit
                continue
            live.append(open_decision)
            value = rule.value(event.price, *record.reward_range)
            reward_id = f"event:{event.id}" if event.id else ""
            await self.joiner.report_derived(record, value, reward_id, event.timestamp)
        if done:
            await self.store.drop_decisions(session_id, done)
        return live

    async def features(self, session_id: str, now: float) -> list[Feature] | None:
        state = await self.store.load(session_id, now)
        return None if state is None else intent_features(state, now)

    async def delete(self, session_id: str) -> bool:
        """Erase a session's context and forget its retained decisions (they will never be learned)."""
        state = await self.store.delete(session_id)
        if state is None:
            return False
        await self.decisions.discard([d.event_id for d in state.decisions])
        self.metrics.sessions_deleted.inc()
        return True
