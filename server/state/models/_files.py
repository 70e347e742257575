"""Model snapshots on disk (embedded), and the store of Redis-mode replicas, which never snapshot.

DATA_DIR/models/<decision_point>/<fingerprint>/<seq>.vw, written atomically; the last few are kept.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from policies import BuiltWith, VWPolicy

_SNAPSHOT = re.compile(r"^(\d{10})\.vw$")


class FollowedModelStore:
    """Redis-mode replicas: models come from the shared learner's publications (`TailorServer._follow`),
    never from local files, and a replica never snapshots (it does not learn)."""

    def latest(self, decision_point: str, fingerprint: str) -> tuple[int, Path] | None:
        return None

    def built(self, decision_point: str) -> list[BuiltWith]:
        return []  # a replica adopts the flags of the published model (`TailorServer._follow_once`)

    def save(self, decision_point: str, fingerprint: str, seq: int, policy: VWPolicy, actions: dict[str, Any]) -> None:
        raise RuntimeError("replicas do not snapshot models: the shared learner publishes them")

    def actions(self, decision_point: str, fingerprint: str, seq: int) -> dict[str, Any] | None:
        return None


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
        """The model, then its learned-actions document `<seq>.json` (read only with the model it belongs to)."""
        folder = self._dir(decision_point, fingerprint)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "vw_args.txt").write_text(policy.spec.vw_args() + "\n")
        tmp = folder / f".{seq:010d}.json.tmp"
        tmp.write_text(json.dumps(actions))
        os.replace(tmp, folder / f"{seq:010d}.json")
        final = folder / f"{seq:010d}.vw"
        tmp = folder / f".{seq:010d}.vw.tmp"
        policy.save(tmp)
        with tmp.open("rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, final)
        for _, old in self._snapshots(folder)[: -self.keep]:
            old.unlink(missing_ok=True)
            old.with_suffix(".json").unlink(missing_ok=True)

    def actions(self, decision_point: str, fingerprint: str, seq: int) -> dict[str, Any] | None:
        path = self._dir(decision_point, fingerprint) / f"{seq:010d}.json"
        try:
            doc: dict[str, Any] = json.loads(path.read_text())
        except (OSError, ValueError):
            return None  # snapshots of releases before the floor have none
        return doc
