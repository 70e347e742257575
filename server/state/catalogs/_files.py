"""The catalog store in the data directory (embedded mode).

DATA_DIR/catalogs/<decision_point>/<version>.json holds each version (format 1, written atomically);
`directory.json` the content hash of each catalog file as last applied; `audit.jsonl` the audit events,
one JSON object per line, the newest `audit_kept` kept. A version file that cannot be read is renamed
`*.corrupt` and reported; the store starts without it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from .._files import fsync_dir, read_json, write_json_atomic
from ._store import STORE_FORMAT, AuditEvent, CatalogStore, CatalogVersion, DirectoryChange, log


class FileCatalogStore(CatalogStore):
    """`CatalogStore` on files; one process owns the data directory (as for model snapshots)."""

    def __init__(
        self, root: Path, audit_kept: int = 10_000, on_corrupt: Callable[[Path, str], None] | None = None
    ) -> None:
        self.root = root
        self.audit_kept = audit_kept
        root.mkdir(parents=True, exist_ok=True)
        self._versions: dict[str, list[CatalogVersion]] = {}
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            for path in sorted(folder.glob("*.json")):
                doc = read_json(path)
                try:
                    if doc is None or doc.get("format") != STORE_FORMAT:
                        raise ValueError("unreadable, or not a catalog version of this release's format")
                    version = CatalogVersion.from_json(doc)
                except (KeyError, TypeError, ValueError) as err:
                    os.replace(path, path.with_name(path.name + ".corrupt"))
                    log.error("catalog version %s set aside: %s", path, err, extra={"event": "corrupt_state"})
                    if on_corrupt is not None:
                        on_corrupt(path, str(err))
                    continue
                self._versions.setdefault(version.decision_point, []).append(version)
        applied = read_json(root / "directory.json") or {}
        self._applied: dict[str, str] = dict(applied.get("applied", {}))
        self._audit_path = root / "audit.jsonl"
        self._audit_lines = sum(1 for _ in self._audit_path.open()) if self._audit_path.exists() else 0

    # --- reads -------------------------------------------------------------------------------------

    async def current(self) -> dict[str, CatalogVersion]:
        return {name: versions[-1] for name, versions in self._versions.items() if versions[-1].document is not None}

    async def history(self, decision_point: str) -> list[CatalogVersion]:
        return list(self._versions.get(decision_point, []))

    async def audit(self, limit: int = 100, decision_point: str | None = None) -> list[AuditEvent]:
        if not self._audit_path.exists():
            return []
        events: list[AuditEvent] = []
        for line in self._audit_path.read_text().splitlines():
            try:
                event = AuditEvent.from_json(json.loads(line))
            except (KeyError, TypeError, ValueError):
                continue  # a line torn by a crash mid-append
            if decision_point is None or event.decision_point == decision_point:
                events.append(event)
        return events[::-1][:limit]

    async def directory(self) -> dict[str, str]:
        return dict(self._applied)

    async def epoch(self) -> int:
        return sum(len(versions) for versions in self._versions.values())

    async def _latest(self, decision_point: str) -> CatalogVersion | None:
        versions = self._versions.get(decision_point)
        return versions[-1] if versions else None

    # --- the one write -----------------------------------------------------------------------------

    async def _commit(
        self,
        decision_point: str,
        base: int | None,
        version: CatalogVersion | None,
        event: AuditEvent | None,
        applied: DirectoryChange | None = None,
    ) -> bool:
        latest = await self._latest(decision_point)
        if base is not None and base != (latest.version if latest is not None else 0):
            return False  # one process owns the folder: only a caller's own stale read gets here
        if version is not None:
            folder = self.root / decision_point
            folder.mkdir(exist_ok=True)
            write_json_atomic(folder / f"{version.version:010d}.json", version.to_json())
            self._versions.setdefault(decision_point, []).append(version)
        if event is not None:
            self._append_audit(event)
        if applied is not None:
            name, sha = applied
            if sha is None:
                self._applied.pop(name, None)
            else:
                self._applied[name] = sha
            write_json_atomic(self.root / "directory.json", {"format": STORE_FORMAT, "applied": self._applied})
        return True

    def _append_audit(self, event: AuditEvent) -> None:
        with self._audit_path.open("a") as f:
            f.write(json.dumps(event.to_json(), separators=(",", ":")) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self._audit_lines += 1
        if self._audit_lines > 2 * self.audit_kept:  # bounded: keep the newest audit_kept
            kept = self._audit_path.read_text().splitlines()[-self.audit_kept :]
            tmp = self._audit_path.with_name(".audit.jsonl.tmp")
            tmp.write_text("\n".join(kept) + "\n")
            os.replace(tmp, self._audit_path)
            fsync_dir(self.root)
            self._audit_lines = len(kept)
