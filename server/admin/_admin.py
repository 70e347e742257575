"""What AdminService does, without protobuf: catalog changes through the store, then served at once; models
exported, imported and reset. Every change is audited with the caller's key name.

Deleting a decision point stops serving it at once: Decide answers NOT_FOUND, its model is snapshotted and
kept on disk, and decisions already made stay in the decision log (rewards for them are accepted; when
their window closes they are not learned, since no model serves the name). Re-creating the name serves the
kept model of the catalog's learning flags, if there is one, and its decisions continue from there.
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from server.catalogs import Catalog, CatalogError, load_catalog_document
from server.core import Aborted, FieldViolation, InvalidArgument, NotFound
from server.decisions import DecisionService
from server.state.catalogs import (
    AuditEvent,
    CatalogStore,
    CatalogVersion,
    Origin,
    UnknownVersion,
    VersionConflict,
    catalog_diff,
    content_hash,
)
from server.state.models import ModelRegistry

from ._models import ModelAdmin

ModelEffect = Literal["kept", "new_model", "none"]


@dataclass(frozen=True, slots=True)
class Change:
    """What a put or rollback did (or, validate_only, would do)."""

    version: CatalogVersion
    changed: bool
    diff: str
    model_effect: ModelEffect


class CatalogAdmin:
    def __init__(
        self,
        store: CatalogStore,
        service: DecisionService,
        models: ModelRegistry,
        model_admin: ModelAdmin,
        serve: Callable[[], Awaitable[None]],
    ) -> None:
        self.store = store
        self.service = service
        self.models = models
        self.model_admin = model_admin
        self.serve = serve  # serve the store's current catalogs at once (other replicas follow within a poll)

    # --- reads ---------------------------------------------------------------------------------------

    async def decision_points(self) -> list[tuple[CatalogVersion, Catalog, str]]:
        """Every served decision point: its current version, catalog and model version, by name."""
        out = []
        for name, version in sorted((await self.store.current()).items()):
            catalog = self.service.catalogs.get(name)
            model = self.models.get(name)
            if catalog is not None:
                out.append((version, catalog, model.version if model is not None else ""))
        return out

    async def get(self, decision_point: str, version: int = 0) -> tuple[CatalogVersion, dict[str, Any]]:
        kept = await self.store.history(decision_point)
        if not kept:
            raise NotFound(f"unknown decision point {decision_point!r}")
        if version == 0:
            found: CatalogVersion | None = kept[-1]
            if found is not None and found.document is None:
                raise NotFound(f"decision point {decision_point!r} was deleted (version {found.version})")
        else:
            found = next((v for v in kept if v.version == version), None)
        if found is None or found.document is None:
            raise NotFound(f"{decision_point} has no version {version} with a catalog")
        return found, copy.deepcopy(found.document)  # the caller's to change: the store's version stays as it was

    async def versions(self, decision_point: str) -> list[CatalogVersion]:
        kept = await self.store.history(decision_point)
        if not kept:
            raise NotFound(f"unknown decision point {decision_point!r}")
        return kept[::-1]

    def model_version(self, decision_point: str) -> str:
        model = self.models.get(decision_point)
        return model.version if model is not None else ""

    async def audit(self, decision_point: str, limit: int) -> list[AuditEvent]:
        return await self.store.audit(limit, decision_point or None)

    # --- catalog changes -----------------------------------------------------------------------------

    async def put(
        self, document: Any, actor: str, expected_version: int | None, validate_only: bool, origin: str = "api"
    ) -> Change:
        catalog = self._validate(document)
        name = catalog.name
        current = (await self.store.current()).get(name)
        at = current.version if current is not None else 0
        if expected_version is not None and expected_version != at:
            raise Aborted(str(VersionConflict(name, expected_version, at)))
        normalized = catalog.document()
        changed = current is None or current.sha256 != content_hash(normalized)
        effect = self._effect(catalog)
        before = current.document if current is not None else None
        if not changed and current is not None:
            return Change(current, False, "", "kept")
        if validate_only:
            would = _would_be(await self.store.history(name), normalized, actor, origin)
            return Change(would, True, catalog_diff(before, normalized), effect)
        try:
            if origin == "rollback":
                version = await self.store.put(normalized, actor, "rollback", expected_version, note="rollback")
            else:
                version = await self.store.put(normalized, actor, "api", expected_version)
        except VersionConflict as err:
            raise Aborted(str(err)) from None
        await self.serve()
        return Change(version, True, catalog_diff(before, normalized), effect)

    async def rollback(
        self, decision_point: str, to_version: int, actor: str, expected_version: int | None, validate_only: bool
    ) -> Change:
        try:
            _, document = await self.get(decision_point, to_version)
        except NotFound:
            raise NotFound(f"{decision_point} has no version {to_version} with a catalog to roll back to") from None
        return await self.put(document, actor, expected_version, validate_only, origin="rollback")

    async def delete(self, decision_point: str, actor: str, expected_version: int | None) -> CatalogVersion:
        try:
            version = await self.store.delete(decision_point, actor, expected_version)
        except UnknownVersion as err:
            raise NotFound(str(err)) from None
        except VersionConflict as err:
            raise Aborted(str(err)) from None
        await self.serve()  # the model is snapshotted as it stops being served: re-creating the name resumes it
        return version

    # --- internals -----------------------------------------------------------------------------------

    def _validate(self, document: Any) -> Catalog:
        try:
            return load_catalog_document(document, Path("catalog"))
        except CatalogError as err:
            raise InvalidArgument([FieldViolation(f"catalog.{field}", what) for field, what in err.fields]) from None

    def _effect(self, catalog: Catalog) -> ModelEffect:
        model = self.models.get(catalog.name)
        if model is None:
            return "new_model"
        return "kept" if self.models.spec_for(catalog) == model.spec else "new_model"


def _would_be(history: list[CatalogVersion], document: dict[str, Any], actor: str, origin: str) -> CatalogVersion:
    """The version a change would get (validate_only)."""
    name = str(document["decision_point"])
    number = history[-1].version + 1 if history else 1
    return CatalogVersion(name, number, document, content_hash(document), _origin(origin), actor, 0.0)


def _origin(origin: str) -> Origin:
    return "rollback" if origin == "rollback" else "api"
