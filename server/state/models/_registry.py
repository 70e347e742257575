"""Served models: one VW policy per decision point, its version, and where its snapshots go.

A model is identified by its decision point and the fingerprint of its VW arguments; changing a
catalog's learning flags starts a new model (VW cannot load a model into other reductions) while the
old one's snapshots stay in its store. The version string is `<fingerprint>.<seq>`, where seq grows by
one with every snapshot, so the version changes whenever the durable model changes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from policies import BuiltWith, LearningSpec, VWPolicy
from server.catalogs import Catalog

from ._actions import LearnedActions

log = logging.getLogger("tailor.models")


class ModelStore(Protocol):
    """Where model snapshots live. The Redis backend implements the same interface."""

    def latest(self, decision_point: str, fingerprint: str) -> tuple[int, Path] | None:
        """The newest snapshot that checks out (corrupt ones are set aside on the way)."""
        ...

    def reject(self, path: Path, reason: str) -> None:
        """Set aside a snapshot that cannot be used, and report it."""
        ...

    def built(self, decision_point: str) -> list[BuiltWith]:
        """What the decision point's stored models were built with, newest first."""
        ...

    def save(self, decision_point: str, fingerprint: str, seq: int, policy: VWPolicy, actions: dict[str, Any]) -> None:
        """Write snapshot `seq` of a model, with its learned-actions document."""
        ...

    def actions(self, decision_point: str, fingerprint: str, seq: int) -> dict[str, Any] | None:
        """The learned-actions document saved with a snapshot (None for snapshots of older releases)."""
        ...


@dataclass(slots=True)
class ServedModel:
    decision_point: str
    spec: LearningSpec
    fingerprint: str
    policy: VWPolicy
    seq: int
    saved_at: float
    actions: LearnedActions = field(default_factory=LearnedActions)
    learned_since_snapshot: int = 0
    baseline: str | None = None  # the catalog's baseline action (learning-health estimates)

    @property
    def version(self) -> str:
        return f"{self.fingerprint}.{self.seq}"


class ModelRegistry:
    """The models currently served, one per decision point."""

    def __init__(self, store: ModelStore) -> None:
        self.store = store
        self._models: dict[str, ServedModel] = {}

    def __iter__(self) -> Iterator[ServedModel]:
        return iter(list(self._models.values()))

    def get(self, decision_point: str) -> ServedModel | None:
        return self._models.get(decision_point)

    def sync(self, catalogs: Mapping[str, Catalog]) -> None:
        """Serve a model for every catalog: keep models whose flags are unchanged, load or start the rest.

        Learning keys a catalog leaves unset keep the flags of the model being served, or else of the newest
        stored model they match (`PolicyConfig.learning_spec`), so a changed default never restarts one."""
        models: dict[str, ServedModel] = {}
        for name, cat in catalogs.items():
            current = self._models.get(name)
            spec = self.spec_for(cat)
            until = cat.policy.new_action_floor.until_learned
            if current is not None and current.spec == spec:
                current.actions.serve(cat.action_ids, until)
                current.baseline = cat.baseline_action
                models[name] = current
                continue
            if current is not None:
                self._keep(current)
                log.info(
                    "decision point %s: learning flags changed; starting model %s",
                    name,
                    spec.fingerprint(),
                    extra={"event": "model_flags_changed", "decision_point": name, "fingerprint": spec.fingerprint()},
                )
            models[name] = self._open(name, spec, cat.action_ids, until)
            models[name].baseline = cat.baseline_action
        for name in self._models.keys() - models.keys():  # decision points no longer served
            self._keep(self._models[name])
        self._models = models

    def _keep(self, model: ServedModel) -> None:
        """Snapshot a model that stops being served, so serving its flags again resumes what it learned."""
        if not model.learned_since_snapshot:
            return  # nothing unsaved (and replicas never learn)
        try:
            self.snapshot(model)
        except OSError:
            log.exception("snapshot of %s failed as it stopped being served", model.decision_point)

    def spec_for(self, catalog: Catalog) -> LearningSpec:
        """The learning flags a catalog gets: keys it leaves unset keep the served model's flags, or else those
        of the newest stored model they match (`PolicyConfig.learning_spec`)."""
        current = self._models.get(catalog.name)
        existing = [BuiltWith(current.fingerprint, current.spec.vw_args())] if current is not None else []
        return catalog.policy.learning_spec([*existing, *self.store.built(catalog.name)])

    def replace_policy(self, decision_point: str, policy: VWPolicy) -> ServedModel:
        """Serve `policy` (imported, or fresh for a reset: same flags) as the model's next version, written at
        once; the learned-action counts start over with it."""
        model = self._models[decision_point]
        old, model.policy = model.policy, policy
        model.actions = LearnedActions.established(model.actions.catalog, model.actions.until)
        model.learned_since_snapshot = 0
        self.snapshot(model)
        old.close()
        return model

    def _open(self, decision_point: str, spec: LearningSpec, action_ids: Sequence[str], until: int) -> ServedModel:
        fingerprint = spec.fingerprint()
        while (found := self.store.latest(decision_point, fingerprint)) is not None:
            seq, path = found
            try:
                policy = VWPolicy(spec, model_file=path)
            except Exception as err:  # VW cannot read it (an unverifiable snapshot of an older release)
                self.store.reject(path, f"VW cannot load it: {err}")
                continue
            log.info(
                "decision point %s: resuming model %s.%d from %s",
                decision_point,
                fingerprint,
                seq,
                path,
                extra={"event": "model_resumed", "decision_point": decision_point, "version": f"{fingerprint}.{seq}"},
            )
            actions = LearnedActions.from_doc(self.store.actions(decision_point, fingerprint, seq), action_ids, until)
            return ServedModel(decision_point, spec, fingerprint, policy, seq, path.stat().st_mtime, actions)
        actions = LearnedActions.established(action_ids, until)
        return ServedModel(decision_point, spec, fingerprint, VWPolicy(spec), 0, time.time(), actions)

    def install(
        self, decision_point: str, policy: VWPolicy, seq: int, saved_at: float, actions: dict[str, Any] | None
    ) -> bool:
        """Serve a published model (with its learned-actions document) in place of the current one; True if
        swapped. A model of other flags replaces the served one (a replica adopts what the learner publishes,
        once its catalog allows it)."""
        model = self._models.get(decision_point)
        if model is None:
            policy.close()
            return False
        tally = LearnedActions.from_doc(actions, model.actions.catalog, model.actions.until)
        if policy.spec != model.spec:
            fingerprint = policy.spec.fingerprint()
            log.info(
                "decision point %s: serving published model %s",
                decision_point,
                fingerprint,
                extra={"event": "model_flags_changed", "decision_point": decision_point, "fingerprint": fingerprint},
            )
            self._models[decision_point] = ServedModel(
                decision_point, policy.spec, policy.spec.fingerprint(), policy, seq, saved_at, tally, 0, model.baseline
            )
            model.policy.close()
            return True
        old, model.policy, model.seq, model.saved_at, model.actions = model.policy, policy, seq, saved_at, tally
        old.close()
        return True

    def snapshot(self, model: ServedModel) -> None:
        """Write a new snapshot of a model and bump its version."""
        self.store.save(model.decision_point, model.fingerprint, model.seq + 1, model.policy, model.actions.to_doc())
        model.seq += 1
        model.saved_at = time.time()
        model.learned_since_snapshot = 0
