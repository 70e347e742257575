"""Served models: one VW policy per decision point, its version, and its snapshots on disk.

A model is identified by its decision point and the fingerprint of its VW arguments; changing a
catalog's learning flags starts a new model (VW cannot load a model into other reductions) while the
old one's snapshots stay on disk. The version string is `<fingerprint>.<seq>`, where seq grows by one
with every snapshot, so the version changes whenever the durable model changes.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from policies import LearningSpec, VWPolicy

from ._catalog import Catalog

log = logging.getLogger("tailor.models")

_SNAPSHOT = re.compile(r"^(\d{10})\.vw$")


class ModelStore(Protocol):
    """Where model snapshots live. The Redis backend implements the same interface."""

    def latest(self, decision_point: str, fingerprint: str) -> tuple[int, Path] | None: ...

    def save(self, decision_point: str, fingerprint: str, seq: int, policy: VWPolicy) -> None: ...


class FollowedModelStore:
    """Redis-mode replicas: models come from the shared learner's publications (`TailorServer._follow`),
    never from local files, and a replica never snapshots (it does not learn)."""

    def latest(self, decision_point: str, fingerprint: str) -> tuple[int, Path] | None:
        return None

    def save(self, decision_point: str, fingerprint: str, seq: int, policy: VWPolicy) -> None:
        raise RuntimeError("replicas do not snapshot models: the shared learner publishes them")


class FileModelStore:
    """Snapshots as files: DATA_DIR/models/<decision_point>/<fingerprint>/<seq>.vw, written atomically."""

    def __init__(self, root: Path, keep: int = 3) -> None:
        self.root = root
        self.keep = keep

    def _dir(self, decision_point: str, fingerprint: str) -> Path:
        return self.root / decision_point / fingerprint

    def _snapshots(self, folder: Path) -> list[tuple[int, Path]]:
        if not folder.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _SNAPSHOT.match(p.name))]
        return sorted(found)

    def latest(self, decision_point: str, fingerprint: str) -> tuple[int, Path] | None:
        snaps = self._snapshots(self._dir(decision_point, fingerprint))
        return snaps[-1] if snaps else None

    def save(self, decision_point: str, fingerprint: str, seq: int, policy: VWPolicy) -> None:
        folder = self._dir(decision_point, fingerprint)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "vw_args.txt").write_text(policy.spec.vw_args() + "\n")
        final = folder / f"{seq:010d}.vw"
        tmp = folder / f".{seq:010d}.vw.tmp"
        policy.save(tmp)
        with tmp.open("rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, final)
        for _, old in self._snapshots(folder)[: -self.keep]:
            old.unlink(missing_ok=True)


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
        """Serve a model for every catalog: keep models whose flags are unchanged, load or start the rest."""
        models: dict[str, ServedModel] = {}
        for name, cat in catalogs.items():
            spec = cat.policy.learning_spec()
            current = self._models.get(name)
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
        """Serve a published model in place of the current one (same flags only); True if swapped."""
        model = self._models.get(decision_point)
        if model is None or policy.spec != model.spec:
            policy.close()
            return False
        old, model.policy, model.seq, model.saved_at = model.policy, policy, seq, saved_at
        old.close()
        return True

    def snapshot(self, model: ServedModel) -> None:
        """Write a new snapshot of a model and bump its version."""
        self.store.save(model.decision_point, model.fingerprint, model.seq + 1, model.policy)
        model.seq += 1
        model.saved_at = time.time()
        model.learned_since_snapshot = 0
