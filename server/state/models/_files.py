"""Model snapshots on disk (embedded), and the store of Redis-mode replicas, which never snapshot.

DATA_DIR/models/<decision_point>/<fingerprint>/<seq>.vw is VW's model file; <seq>.json beside it is the
snapshot's manifest, written after the model file and so the mark that the snapshot is complete:

    {"format": 2, "model_sha256": "<hex>", "model_bytes": N, "actions": {"format": 1, "counts": {...}}}

Both are written atomically (temporary file, fsync, rename, fsync of the folder); the last few are kept.
Opening a model takes the newest snapshot whose model file matches its manifest's checksum: a torn or
corrupt snapshot is renamed aside (`<seq>.vw.corrupt`), reported (metric and log line), and the one before
it is used. Snapshots of 0.1 have no manifest (format 1 wrote only the learned-actions document, 0.1 not
even that): they are used as they are, and a model file that VW cannot load is set aside the same way.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from policies import BuiltWith, VWPolicy

from .._files import read_json, write_json_atomic

log = logging.getLogger("tailor.snapshots")

_SNAPSHOT = re.compile(r"^(\d{10})\.vw$")
SNAPSHOT_FORMAT = 2

#: Called with (path, reason) for every snapshot set aside as corrupt.
OnCorrupt = Callable[[Path, str], None]


class FollowedModelStore:
    """Redis-mode replicas: models come from the shared learner's publications (`TailorServer._follow`),
    never from local files, and a replica never snapshots (it does not learn)."""

    def latest(self, decision_point: str, fingerprint: str) -> tuple[int, Path] | None:
        return None

    def reject(self, path: Path, reason: str) -> None:
        raise RuntimeError("replicas have no snapshots to reject")

    def built(self, decision_point: str) -> list[BuiltWith]:
        return []  # a replica adopts the flags of the published model (`TailorServer._follow_once`)

    def save(self, decision_point: str, fingerprint: str, seq: int, policy: VWPolicy, actions: dict[str, Any]) -> None:
        raise RuntimeError("replicas do not snapshot models: the shared learner publishes them")

    def actions(self, decision_point: str, fingerprint: str, seq: int) -> dict[str, Any] | None:
        return None


class FileModelStore:
    """Snapshots as files: DATA_DIR/models/<decision_point>/<fingerprint>/<seq>.vw, written atomically."""

    def __init__(self, root: Path, keep: int = 3, on_corrupt: OnCorrupt | None = None) -> None:
        self.root = root
        self.keep = keep
        self.on_corrupt = on_corrupt

    def _dir(self, decision_point: str, fingerprint: str) -> Path:
        return self.root / decision_point / fingerprint

    def _snapshots(self, folder: Path) -> list[tuple[int, Path]]:
        if not folder.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _SNAPSHOT.match(p.name))]
        return sorted(found)

    def latest(self, decision_point: str, fingerprint: str) -> tuple[int, Path] | None:
        """The newest snapshot that checks out; corrupt ones on the way are set aside and reported."""
        for seq, path in reversed(self._snapshots(self._dir(decision_point, fingerprint))):
            problem = self._check(path)
            if problem is None:
                return seq, path
            self.reject(path, problem)
        return None

    def _check(self, path: Path) -> str | None:
        manifest = read_json(path.with_suffix(".json"))
        if manifest is None or manifest.get("format") != SNAPSHOT_FORMAT:
            return None  # a snapshot of an earlier release (or one whose manifest was never written): unverifiable
        try:
            data = path.read_bytes()
        except OSError as err:
            return f"cannot read: {err.strerror}"
        if len(data) != manifest.get("model_bytes") or hashlib.sha256(data).hexdigest() != manifest.get("model_sha256"):
            return f"checksum mismatch ({len(data)} bytes, manifest says {manifest.get('model_bytes')})"
        return None

    def reject(self, path: Path, reason: str) -> None:
        """Set a snapshot aside (kept for inspection, never loaded again) and report it."""
        log.error(
            "model snapshot %s is corrupt (%s): set aside, using the one before it",
            path,
            reason,
            extra={"event": "corrupt_state", "what": "snapshot"},
        )
        for part in (path, path.with_suffix(".json")):
            if part.exists():
                os.replace(part, part.with_name(part.name + ".corrupt"))
        if self.on_corrupt is not None:
            self.on_corrupt(path, reason)

    def built(self, decision_point: str) -> list[BuiltWith]:
        """Every model of the decision point with a snapshot, newest snapshot first, with the VW command
        line recorded beside it (`vw_args.txt`, written since the first release)."""
        found: list[tuple[float, BuiltWith]] = []
        point = self.root / decision_point
        for folder in point.iterdir() if point.is_dir() else ():
            snaps = self._snapshots(folder)
            if not snaps:
                continue
            args = folder / "vw_args.txt"
            recorded = args.read_text().strip() if args.is_file() else None
            found.append((snaps[-1][1].stat().st_mtime, BuiltWith(folder.name, recorded)))
        return [b for _, b in sorted(found, key=lambda f: f[0], reverse=True)]

    def save(self, decision_point: str, fingerprint: str, seq: int, policy: VWPolicy, actions: dict[str, Any]) -> None:
        """The model file, then its manifest (checksum and learned-actions document): the manifest marks the
        snapshot complete."""
        folder = self._dir(decision_point, fingerprint)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "vw_args.txt").write_text(policy.spec.vw_args() + "\n")
        tmp = folder / f".{seq:010d}.vw.tmp"
        policy.save(tmp)
        with tmp.open("rb") as f:
            data = f.read()
            os.fsync(f.fileno())
        os.replace(tmp, folder / f"{seq:010d}.vw")
        manifest = {
            "format": SNAPSHOT_FORMAT,
            "model_sha256": hashlib.sha256(data).hexdigest(),
            "model_bytes": len(data),
            "actions": actions,
        }
        write_json_atomic(folder / f"{seq:010d}.json", manifest)
        for _, old in self._snapshots(folder)[: -self.keep]:
            old.unlink(missing_ok=True)
            old.with_suffix(".json").unlink(missing_ok=True)

    def actions(self, decision_point: str, fingerprint: str, seq: int) -> dict[str, Any] | None:
        doc = read_json(self._dir(decision_point, fingerprint) / f"{seq:010d}.json")
        if doc is not None and doc.get("format") == SNAPSHOT_FORMAT:
            actions: dict[str, Any] | None = doc.get("actions")
            return actions
        return doc  # format 1: the learned-actions document itself; 0.1: none
