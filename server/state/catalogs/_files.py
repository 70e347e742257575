"""The catalog store in the data directory (embedded mode).

DATA_DIR/catalogs/<decision_point>/<version>.json holds each version (format 1, written atomically);
`directory.json` the content hash of each catalog file as last applied; `audit.jsonl` the audit events,
one JSON object per line, the newest `audit_kept` kept. A version file that cannot be read is renamed
`*.corrupt` and reported; the store starts without it.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .._files import fsync_dir, read_json, write_json_atomic
from ._store import (
    DIRECTORY_ACTOR,
    STORE_FORMAT,
    Action,
    AuditEvent,
    CatalogVersion,
    Origin,
    UnknownVersion,
    VersionConflict,
    content_hash,
    diff,
    now,
)

log = logging.getLogger("tailor.catalogs")


class FileCatalogStore:
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

    def _latest(self, decision_point: str) -> CatalogVersion | None:
        versions = self._versions.get(decision_point)
        return versions[-1] if versions else None

    def current(self) -> dict[str, CatalogVersion]:
        return {name: versions[-1] for name, versions in self._versions.items() if versions[-1].document is not None}

    def history(self, decision_point: str) -> list[CatalogVersion]:
        return list(self._versions.get(decision_point, []))

    def audit(self, limit: int = 100, decision_point: str | None = None) -> list[AuditEvent]:
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

    # --- changes -----------------------------------------------------------------------------------

    def put(
        self,
        document: dict[str, Any],
        actor: str,
        origin: Origin = "api",
        expected_version: int | None = None,
        note: str = "",
    ) -> CatalogVersion:
        name = str(document["decision_point"])
        latest = self._latest(name)
        current = latest if latest is not None and latest.document is not None else None
        self._check(name, current, expected_version)
        sha = content_hash(document)
        if current is not None and current.sha256 == sha:
            return current
        action: Action = "rollback" if origin == "rollback" else "update" if current is not None else "create"
        return self._write(name, document, sha, origin, actor, action, note)

    def delete(self, decision_point: str, actor: str, expected_version: int | None = None) -> CatalogVersion:
        latest = self._latest(decision_point)
        if latest is None or latest.document is None:
            raise UnknownVersion(f"decision point {decision_point!r} does not exist")
        self._check(decision_point, latest, expected_version)
        return self._write(decision_point, None, "", "api", actor, "delete", "")

    def rollback(
        self, decision_point: str, to_version: int, actor: str, expected_version: int | None = None
    ) -> CatalogVersion:
        kept = next((v for v in self._versions.get(decision_point, []) if v.version == to_version), None)
        if kept is None or kept.document is None:
            raise UnknownVersion(f"{decision_point} has no version {to_version} with a catalog to roll back to")
        return self.put(kept.document, actor, "rollback", expected_version, note=f"back to version {to_version}")

    def apply_directory(self, documents: dict[str, dict[str, Any]]) -> list[AuditEvent]:
        before = self._audit_lines
        for name, document in sorted(documents.items()):
            sha = content_hash(document)
            if self._applied.get(name) == sha:
                continue  # the file has not changed since it was applied: later API edits stand
            latest = self._latest(name)
            note = ""
            if latest is not None and latest.document is not None and latest.origin != "directory":
                note = f"the catalog file changed: replaces version {latest.version} ({latest.origin}, {latest.actor})"
            self.put(document, DIRECTORY_ACTOR, "directory", note=note)
            self._applied[name] = sha
        for name in sorted(set(self._applied) - set(documents)):
            latest = self._latest(name)
            if latest is not None and latest.document is not None and latest.origin == "directory":
                self._write(name, None, "", "directory", DIRECTORY_ACTOR, "delete", "its catalog file was removed")
            del self._applied[name]
        write_json_atomic(self.root / "directory.json", {"format": STORE_FORMAT, "applied": self._applied})
        return self.audit(self._audit_lines - before)

    def note(self, decision_point: str, actor: str, action: Action, note: str) -> AuditEvent:
        latest = self._latest(decision_point)
        event = AuditEvent(now(), actor, action, decision_point, latest.version if latest else 0, "", note)
        self._append_audit(event)
        return event

    # --- internals ---------------------------------------------------------------------------------

    def _check(self, name: str, current: CatalogVersion | None, expected: int | None) -> None:
        at = current.version if current is not None and current.document is not None else 0
        if expected is not None and expected != at:
            raise VersionConflict(name, expected, at)

    def _write(
        self,
        name: str,
        document: dict[str, Any] | None,
        sha: str,
        origin: Origin,
        actor: str,
        action: Action,
        note: str,
    ) -> CatalogVersion:
        latest = self._latest(name)
        previous = latest.document if latest is not None else None
        version = CatalogVersion(name, (latest.version if latest else 0) + 1, document, sha, origin, actor, now())
        folder = self.root / name
        folder.mkdir(exist_ok=True)
        write_json_atomic(folder / f"{version.version:010d}.json", version.to_json())
        self._versions.setdefault(name, []).append(version)
        self._append_audit(AuditEvent(version.at, actor, action, name, version.version, diff(previous, document), note))
        log.info(
            "catalog %s: %s, version %d by %s",
            name,
            action,
            version.version,
            actor,
            extra={"event": "catalog_changed", "decision_point": name, "version": version.version, "actor": actor},
        )
        return version

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
