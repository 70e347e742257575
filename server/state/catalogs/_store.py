"""The catalog store: every decision point's catalog, versioned, with its history and an audit log.

One source of truth for what each decision point may show. Every change is a new version (monotonic per
decision point, deletions included, so a re-created name continues the numbering) and keeps the old ones;
every change appends an audit event (who, when, what, the diff).

The catalog directory seeds the store and is re-applied on SIGHUP through `apply_directory`, idempotently
by content: a file is applied when *the file* changed since it was last applied (or is new), not when the
store differs from it. So a marketer's later edit through the API stands until the file itself changes;
when it does, the file wins, and the audit event says which edit it replaced (never silently). A decision
point whose file is removed is deleted only if its current version came from the directory.

Embedded mode keeps it in `DATA_DIR/catalogs/` (`FileCatalogStore`).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import yaml

Origin = Literal["directory", "api", "rollback"]
Action = Literal["create", "update", "delete", "rollback", "import_model", "reset_model"]

#: Version of the files and entries the store writes (each carries it as `format`).
STORE_FORMAT = 1
#: The actor of changes made by applying the catalog directory.
DIRECTORY_ACTOR = "catalog-directory"


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


class CatalogStore(Protocol):
    """Where catalogs live; documents are validated by the caller (`server.catalogs`) before they get here."""

    def current(self) -> dict[str, CatalogVersion]:
        """The latest version of every decision point that exists (deleted ones left out)."""
        ...

    def history(self, decision_point: str) -> list[CatalogVersion]:
        """Every kept version of a decision point, oldest first (empty if it never existed)."""
        ...

    def put(
        self,
        document: dict[str, Any],
        actor: str,
        origin: Origin = "api",
        expected_version: int | None = None,
        note: str = "",
    ) -> CatalogVersion:
        """Make `document` the current version of its decision point (a no-op returning the current version
        when the content is unchanged). `expected_version` (0: the decision point must not exist) guards
        against lost updates: VersionConflict when it is not current."""
        ...

    def delete(self, decision_point: str, actor: str, expected_version: int | None = None) -> CatalogVersion:
        """Delete a decision point: a new version without a document. UnknownVersion if it does not exist."""
        ...

    def rollback(
        self, decision_point: str, to_version: int, actor: str, expected_version: int | None = None
    ) -> CatalogVersion:
        """Make a kept version's document current again, as a new version."""
        ...

    def apply_directory(self, documents: dict[str, dict[str, Any]]) -> list[AuditEvent]:
        """Apply the catalog directory (validated documents by decision point); the changes it made."""
        ...

    def audit(self, limit: int = 100, decision_point: str | None = None) -> list[AuditEvent]:
        """The newest audit events first, at most `limit`, of one decision point or all."""
        ...

    def note(self, decision_point: str, actor: str, action: Action, note: str) -> AuditEvent:
        """Audit a change that is not a catalog version (a model imported or reset); `version` is the current
        catalog version."""
        ...


def now() -> float:
    return time.time()
