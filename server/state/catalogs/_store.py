"""The catalog store: every decision point's catalog, versioned, with its history and an audit log.

One source of truth for what each decision point may show. Every change is a new version (monotonic per
decision point, deletions included, so a re-created name continues the numbering) and keeps the old ones;
every change appends an audit event (who, when, what, the diff).

The catalog directory seeds the store and is re-applied on SIGHUP through `apply_directory`, idempotently
by content: a file is applied when *the file* changed since it was last applied (or is new), not when the
store differs from it. So a marketer's later edit through the API stands until the file itself changes;
when it does, the file wins, and the audit event says which edit it replaced (never silently). A decision
point whose file is removed is deleted only if its current version came from the directory.

The directory is applied by every process that mounts it (each replica, and the learner in Redis mode)
when it starts, and again when its files change (SIGHUP, or the periodic check): at start a process applies
every file whose content differs from what was last applied; later only the files that changed under it.
So N replicas mounting one ConfigMap make one version, not N (the compare-and-set of `_commit` lets one
of them win and the others find it applied), and a replica that still mounts an older ConfigMap does not
re-apply it on a SIGHUP; it would only when it restarts, which a rollout replaces with the new files.

Embedded mode keeps it in `DATA_DIR/catalogs/` (`FileCatalogStore`), Redis mode in Redis
(`RedisCatalogStore`).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import yaml

Origin = Literal["directory", "api", "rollback"]
Action = Literal["create", "update", "delete", "rollback", "import_model", "reset_model"]

#: Version of the files and entries the store writes (each carries it as `format`).
STORE_FORMAT = 1
#: The actor of changes made by applying the catalog directory.
DIRECTORY_ACTOR = "catalog-directory"

log = logging.getLogger("tailor.catalogs")


def content_hash(document: dict[str, Any]) -> str:
    """The identity of a catalog's content: formatting, key order and comments do not count."""
    return hashlib.sha256(json.dumps(document, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def diff(before: dict[str, Any] | None, after: dict[str, Any] | None) -> str:
    """A unified diff of two catalog documents as YAML (empty for no change)."""

    def lines(doc: dict[str, Any] | None) -> list[str]:
        return yaml.safe_dump(doc, sort_keys=False).splitlines() if doc is not None else []

    return "\n".join(difflib.unified_diff(lines(before), lines(after), "before", "after", lineterm=""))


@dataclass(frozen=True, slots=True)
class CatalogVersion:
    """One version of a decision point's catalog; `document` is None for a deletion."""

    decision_point: str
    version: int
    document: dict[str, Any] | None
    sha256: str
    origin: Origin
    actor: str
    at: float

    def to_json(self) -> dict[str, Any]:
        return {
            "format": STORE_FORMAT,
            "decision_point": self.decision_point,
            "version": self.version,
            "document": self.document,
            "sha256": self.sha256,
            "origin": self.origin,
            "actor": self.actor,
            "at": self.at,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> CatalogVersion:
        return cls(
            decision_point=doc["decision_point"],
            version=int(doc["version"]),
            document=doc["document"],
            sha256=doc["sha256"],
            origin=doc["origin"],
            actor=doc["actor"],
            at=float(doc["at"]),
        )


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One change: who (a key name, or the catalog directory), when, what, and the diff it made."""

    at: float
    actor: str
    action: Action
    decision_point: str
    version: int
    diff: str
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "format": STORE_FORMAT,
            "at": self.at,
            "actor": self.actor,
            "action": self.action,
            "decision_point": self.decision_point,
            "version": self.version,
            "diff": self.diff,
            "note": self.note,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> AuditEvent:
        return cls(
            at=float(doc["at"]),
            actor=doc["actor"],
            action=doc["action"],
            decision_point=doc["decision_point"],
            version=int(doc["version"]),
            diff=doc["diff"],
            note=doc.get("note", ""),
        )


class VersionConflict(Exception):
    """`expected_version` is not the current version: someone else changed the decision point meanwhile."""

    def __init__(self, decision_point: str, expected: int, current: int) -> None:
        self.decision_point, self.expected, self.current = decision_point, expected, current
        super().__init__(
            f"{decision_point} is at version {current}, not {expected}: it changed meanwhile; "
            "read it again and reapply your change"
        )


class UnknownVersion(Exception):
    """A version that the store does not hold (never written, or the decision point never existed)."""


DirectoryChange = tuple[str, str | None]  # (decision point, the content hash of its file as applied; None: removed)


class CatalogStore:
    """Where catalogs live; documents are validated by the caller (`server.catalogs`) before they get here.

    The changes are written once, here, on three primitives a backend provides: read a decision point's
    latest version (`_latest`), and commit a new version with its audit event and the directory record
    *if the latest version is still the one the change was computed from* (`_commit`, a compare-and-set),
    so concurrent writers (replicas, a marketer, the catalog directory) never overwrite each other unseen:
    a change computed from a stale version is computed again, or refused (`expected_version`)."""

    # --- what a backend provides -------------------------------------------------------------------

    async def current(self) -> dict[str, CatalogVersion]:
        """The latest version of every decision point that exists (deleted ones left out)."""
        raise NotImplementedError

    async def history(self, decision_point: str) -> list[CatalogVersion]:
        """Every kept version of a decision point, oldest first (empty if it never existed)."""
        raise NotImplementedError

    async def audit(self, limit: int = 100, decision_point: str | None = None) -> list[AuditEvent]:
        """The newest audit events first, at most `limit`, of one decision point or all."""
        raise NotImplementedError

    async def directory(self) -> dict[str, str]:
        """The content hash of each catalog file as last applied, by decision point."""
        raise NotImplementedError

    async def epoch(self) -> int:
        """A number that grows with every new version of any decision point (followers poll it)."""
        raise NotImplementedError

    async def _latest(self, decision_point: str) -> CatalogVersion | None:
        raise NotImplementedError

    async def _commit(
        self,
        decision_point: str,
        base: int | None,
        version: CatalogVersion | None,
        event: AuditEvent | None,
        applied: DirectoryChange | None = None,
    ) -> bool:
        """Write `version` (if any), `event` (if any) and the directory record (if any) at once, provided the
        decision point's latest version is still `base` (0: none; None: do not check); False if it is not."""
        raise NotImplementedError

    # --- changes -----------------------------------------------------------------------------------

    async def put(
        self,
        document: dict[str, Any],
        actor: str,
        origin: Origin = "api",
        expected_version: int | None = None,
        note: str = "",
        applied: DirectoryChange | None = None,
    ) -> CatalogVersion:
        """Make `document` the current version of its decision point (a no-op returning the current version
        when the content is unchanged). `expected_version` (0: the decision point must not exist) guards
        against lost updates: VersionConflict when it is not current."""
        name = str(document["decision_point"])
        sha = content_hash(document)
        while True:
            latest = await self._latest(name)
            current = latest if latest is not None and latest.document is not None else None
            _check(name, current, expected_version)
            if current is not None and current.sha256 == sha:
                if applied is not None and not await self._commit(name, current.version, None, None, applied):
                    continue
                return current
            action: Action = "rollback" if origin == "rollback" else "update" if current is not None else "create"
            if (
                version := await self._write(latest, name, document, sha, origin, actor, action, note, applied)
            ) is not None:
                return version

    async def delete(self, decision_point: str, actor: str, expected_version: int | None = None) -> CatalogVersion:
        """Delete a decision point: a new version without a document. UnknownVersion if it does not exist."""
        while True:
            latest = await self._latest(decision_point)
            if latest is None or latest.document is None:
                raise UnknownVersion(f"decision point {decision_point!r} does not exist")
            _check(decision_point, latest, expected_version)
            if (version := await self._write(latest, decision_point, None, "", "api", actor, "delete", "")) is not None:
                return version

    async def rollback(
        self, decision_point: str, to_version: int, actor: str, expected_version: int | None = None
    ) -> CatalogVersion:
        """Make a kept version's document current again, as a new version."""
        kept = next((v for v in await self.history(decision_point) if v.version == to_version), None)
        if kept is None or kept.document is None:
            raise UnknownVersion(f"{decision_point} has no version {to_version} with a catalog to roll back to")
        return await self.put(kept.document, actor, "rollback", expected_version, note=f"back to version {to_version}")

    async def apply_directory(
        self, documents: dict[str, dict[str, Any]], removed: Iterable[str] = ()
    ) -> list[AuditEvent]:
        """Apply catalog files (validated documents by decision point) and files that were removed; the changes
        made. A file is applied when its content differs from what was last applied of it, so N processes
        applying one directory make one version, and an API edit stands until the file itself changes."""
        events: list[AuditEvent] = []
        for name, document in sorted(documents.items()):
            sha = content_hash(document)
            while True:
                if (await self.directory()).get(name) == sha:
                    break  # applied already (by this process before, or by another one)
                latest = await self._latest(name)
                current = latest if latest is not None and latest.document is not None else None
                if current is not None and current.sha256 == sha:
                    if await self._commit(name, current.version, None, None, (name, sha)):
                        break
                    continue
                note = ""
                if current is not None and current.origin != "directory":
                    replaced = f"{current.version} ({current.origin}, {current.actor})"
                    note = f"the catalog file changed: replaces version {replaced}"
                action: Action = "update" if current is not None else "create"
                version = await self._write(
                    latest, name, document, sha, "directory", DIRECTORY_ACTOR, action, note, (name, sha)
                )
                if version is not None:
                    events.append(_event_of(version, action, latest, note))
                    break
        for name in sorted(set(removed)):
            while True:
                if name not in await self.directory():
                    break
                latest = await self._latest(name)
                if latest is None or latest.document is None or latest.origin != "directory":
                    # an API edit made it the marketer's: the directory no longer owns it
                    if await self._commit(name, latest.version if latest else 0, None, None, (name, None)):
                        break
                    continue
                note = "its catalog file was removed"
                version = await self._write(
                    latest, name, None, "", "directory", DIRECTORY_ACTOR, "delete", note, (name, None)
                )
                if version is not None:
                    events.append(_event_of(version, "delete", latest, note))
                    break
        return events

    async def note(self, decision_point: str, actor: str, action: Action, note: str) -> AuditEvent:
        """Audit a change that is not a catalog version (a model imported or reset); `version` is the current
        catalog version."""
        latest = await self._latest(decision_point)
        event = AuditEvent(now(), actor, action, decision_point, latest.version if latest else 0, "", note)
        await self._commit(decision_point, None, None, event)
        return event

    async def _write(
        self,
        latest: CatalogVersion | None,
        name: str,
        document: dict[str, Any] | None,
        sha: str,
        origin: Origin,
        actor: str,
        action: Action,
        note: str,
        applied: DirectoryChange | None = None,
    ) -> CatalogVersion | None:
        """Commit the version after `latest`; None if another writer got there first (compute it again)."""
        base = latest.version if latest is not None else 0
        version = CatalogVersion(name, base + 1, document, sha, origin, actor, now())
        previous = latest.document if latest is not None else None
        event = AuditEvent(version.at, actor, action, name, version.version, diff(previous, document), note)
        if not await self._commit(name, base, version, event, applied):
            return None
        log.info(
            "catalog %s: %s, version %d by %s",
            name,
            action,
            version.version,
            actor,
            extra={"event": "catalog_changed", "decision_point": name, "version": version.version, "actor": actor},
        )
        return version


def _check(name: str, current: CatalogVersion | None, expected: int | None) -> None:
    at = current.version if current is not None and current.document is not None else 0
    if expected is not None and expected != at:
        raise VersionConflict(name, expected, at)


def _event_of(version: CatalogVersion, action: Action, latest: CatalogVersion | None, note: str) -> AuditEvent:
    previous = latest.document if latest is not None else None
    return AuditEvent(
        version.at,
        version.actor,
        action,
        version.decision_point,
        version.version,
        diff(previous, version.document),
        note,
    )


def now() -> float:
    return time.time()
