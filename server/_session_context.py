"""Session context: behaviour events in, intent features out, rewards derived by catalog rules.

TrackEvents folds each validated event into its session's state; an event a catalog's reward rules
price (add-to-cart 0.3, purchase 1.0, ...) also credits every open decision of that session whose
window covers the event, each decision point by its own rules, through the same joiner as explicit
rewards, so a decision is still learned exactly once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from policies import encode_features

from ._catalog import Catalog
from ._decision_log import DecisionLog
from ._intent import Feature, intent_features
from ._joiner import RewardJoiner
from ._metrics import Metrics
from ._sessions import InMemorySessionStore, OpenDecision, TrackedEvent


class SessionContext:
    def __init__(
        self, store: InMemorySessionStore, decisions: DecisionLog, joiner: RewardJoiner, metrics: Metrics
    ) -> None:
        self.store = store
        self.decisions = decisions
        self.joiner = joiner
        self.metrics = metrics
        self.catalogs: Mapping[str, Catalog] = {}
        self._accepted = metrics.session_events.labels("accepted")
        self._duplicate = metrics.session_events.labels("duplicate")

    def track(self, events: Iterable[TrackedEvent], now: float) -> int:
        """Fold validated events into their sessions; returns how many were new (not duplicates)."""
        applied = 0
        for event in events:
            state = self.store.get_or_create(event.session_id, now)
            if not state.apply(event):
                self._duplicate.inc()
                continue
            applied += 1
            self._accepted.inc()
            if state.decisions:
                self._credit(state.decisions, event)
        return applied

    def _credit(self, open_decisions: list[OpenDecision], event: TrackedEvent) -> None:
        """Derive rewards for the session's open decisions from one event, by their catalogs' rules."""
        live = []
        for open_decision in open_decisions:
            record = self.decisions.get(open_decision.event_id)
            if record is None or record.learned:
                continue  # nothing more to credit: drop it from the session
            live.append(open_decision)
            if event.timestamp < open_decision.decided_at:
                continue
            catalog = self.catalogs.get(record.decision_point)
            rule = catalog.policy.rule_for(event.kind) if catalog else None
            if rule is None:
                continue
            value = rule.value(event.price, *record.reward_range)
            reward_id = f"event:{event.id}" if event.id else ""
            self.joiner.report_derived(record, value, reward_id, event.timestamp)
        open_decisions[:] = live

    def features(self, session_id: str, now: float) -> list[Feature] | None:
        state = self.store.get(session_id, now)
        return None if state is None else intent_features(state, now)

    def feature_text(self, session_id: str, now: float) -> str:
        """The session's intent features as VW text (empty for an unknown session)."""
        state = self.store.get(session_id, now)
        return "" if state is None else encode_features(intent_features(state, now))

    def record_decision(
        self, session_id: str, decision_point: str, action_id: str, event_id: str, now: float, logged: bool
    ) -> None:
        """Remember what this session was shown, and (when logged) the decision for rule-derived rewards."""
        state = self.store.get_or_create(session_id, now)
        state.record_decision(OpenDecision(event_id, decision_point, now), action_id, open_for_rewards=logged)

    def delete(self, session_id: str) -> bool:
        """Erase a session's context and forget its retained decisions (they will never be learned)."""
        state = self.store.delete(session_id)
        if state is None:
            return False
        for open_decision in state.decisions:
            self.decisions.discard(open_decision.event_id)
        self.metrics.sessions_deleted.inc()
        return True
