"""Served models: one VW policy per decision point, its version, and where its snapshots go.

A model is identified by its decision point and the fingerprint of its VW arguments; changing a
catalog's learning flags starts a new model (VW cannot load a model into other reductions) while the
old one's snapshots stay in its store. The version string is `<fingerprint>.<seq>`, where seq grows by
one with every snapshot, so the version changes whenever the durable model changes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from policies import BuiltWith, LearningSpec, VWPolicy
from server.catalogs import Catalog

log = logging.getLogger("tailor.models")


class ModelStore(Protocol):
    """Where model snapshots live. The Redis backend implements the same interface."""

    def latest(self, decision_point: str, fingerprint: str) -> tuple[int, Path] | None: ...

    def built(self, decision_point: str) -> list[BuiltWith]:
        """What the decision point's stored models were built with, newest first."""
        ...

    def save(self, decision_point: str, fingerprint: str, seq: int, policy: VWPolicy) -> None: ...


@dataclass(slots=True)
class ServedModel:
    decision_point: str
    spec: LearningSpec
    fingerprint: str
    policy: VWPolicy
    seq: int
    saved_at: float
    learned_since_snapshot: int = 0

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
            existing = [BuiltWith(current.fingerprint, current.spec.vw_args())] if current is not None else []
            spec = cat.policy.learning_spec([*existing, *self.store.built(name)])
            if current is not None and current.spec == spec:
                models[name] = current
                continue
            if current is not None:
                log.info("decision point %s: learning flags changed; starting model %s", name, spec.fingerprint())
            models[name] = self._open(name, spec)
        self._models = models

    def _open(self, decision_point: str, spec: LearningSpec) -> ServedModel:
        fingerprint = spec.fingerprint()
        found = self.store.latest(decision_point, fingerprint)
        if found is None:
            return ServedModel(decision_point, spec, fingerprint, VWPolicy(spec), seq=0, saved_at=time.time())
        seq, path = found
        log.info("decision point %s: resuming model %s.%d from %s", decision_point, fingerprint, seq, path)
        return ServedModel(
            decision_point, spec, fingerprint, VWPolicy(spec, model_file=path), seq=seq, saved_at=path.stat().st_mtime
        )

    def install(self, decision_point: str, policy: VWPolicy, seq: int, saved_at: float) -> bool:
        """Serve a published model in place of the current one; True if swapped. A model of other flags
        replaces the served one (a replica adopts what the learner publishes, once its catalog allows it)."""
        model = self._models.get(decision_point)
        if model is None:
            policy.close()
            return False
        if policy.spec != model.spec:
            log.info("decision point %s: serving published model %s", decision_point, policy.spec.fingerprint())
            self._models[decision_point] = ServedModel(
                decision_point, policy.spec, policy.spec.fingerprint(), policy, seq, saved_at
            )
            model.policy.close()
            return True
        old, model.policy, model.seq, model.saved_at = model.policy, policy, seq, saved_at
        old.close()
        return True

    def snapshot(self, model: ServedModel) -> None:
        """Write a new snapshot of a model and bump its version."""
        self.store.save(model.decision_point, model.fingerprint, model.seq + 1, model.policy)
        model.seq += 1
        model.saved_at = time.time()
        model.learned_since_snapshot = 0
