"""What AdminService does, without protobuf: catalog changes through the store, then served at once; models
exported, imported and reset. Every change is audited with the caller's key name.

Deleting a decision point stops serving it at once: Decide answers NOT_FOUND, its model is snapshotted and
kept on disk, and decisions already made stay in the decision log (rewards for them are accepted; when
their window closes they are not learned, since no model serves the name). Re-creating the name serves the
kept model of the catalog's learning flags, if there is one, and its decisions continue from there.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from policies import VWPolicy
from server.catalogs import Catalog, CatalogError, load_catalog_document
from server.core import Aborted, FailedPrecondition, FieldViolation, InvalidArgument, NotFound
from server.decisions import DecisionService
from server.state.catalogs import (
    AuditEvent,
    CatalogVersion,
    FileCatalogStore,
    Origin,
    UnknownVersion,
    VersionConflict,
    catalog_diff,
    content_hash,
)
from server.state.models import ModelRegistry, ServedModel, policy_bytes, policy_from_bytes

ModelEffect = Literal["kept", "new_model", "none"]


@dataclass(frozen=True, slots=True)
class Change:
    """What a put or rollback did (or, validate_only, would do)."""

    version: CatalogVersion
    changed: bool
    diff: str
    model_effect: ModelEffect


class CatalogAdmin:
    def __init__(self, store: FileCatalogStore, service: DecisionService, models: ModelRegistry) -> None:
        self.store = store
        self.service = service
        self.models = models

    # --- reads ---------------------------------------------------------------------------------------

    def decision_points(self) -> list[tuple[CatalogVersion, Catalog, str]]:
        """Every served decision point: its current version, catalog and model version, by name."""
        out = []
        for name, version in sorted(self.store.current().items()):
            catalog = self.service.catalogs.get(name)
            model = self.models.get(name)
            if catalog is not None:
                out.append((version, catalog, model.version if model is not None else ""))
        return out

    def get(self, decision_point: str, version: int = 0) -> tuple[CatalogVersion, dict[str, Any]]:
        kept = self.store.history(decision_point)
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
        return found, found.document

    def versions(self, decision_point: str) -> list[CatalogVersion]:
        kept = self.store.history(decision_point)
        if not kept:
            raise NotFound(f"unknown decision point {decision_point!r}")
        return kept[::-1]

    def model_version(self, decision_point: str) -> str:
        model = self.models.get(decision_point)
        return model.version if model is not None else ""

    def audit(self, decision_point: str, limit: int) -> list[AuditEvent]:
        return self.store.audit(limit, decision_point or None)

    # --- catalog changes -----------------------------------------------------------------------------

    def put(
        self, document: Any, actor: str, expected_version: int | None, validate_only: bool, origin: str = "api"
    ) -> Change:
        catalog = self._validate(document)
        name = catalog.name
        current = self.store.current().get(name)
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
            would = _would_be(self.store.history(name), normalized, actor, origin)
            return Change(would, True, catalog_diff(before, normalized), effect)
        try:
            if origin == "rollback":
                version = self.store.put(normalized, actor, "rollback", expected_version, note="rollback")
            else:
                version = self.store.put(normalized, actor, "api", expected_version)
        except VersionConflict as err:
            raise Aborted(str(err)) from None
        self._serve()
        return Change(version, True, catalog_diff(before, normalized), effect)

    def rollback(
        self, decision_point: str, to_version: int, actor: str, expected_version: int | None, validate_only: bool
    ) -> Change:
        try:
            _, document = self.get(decision_point, to_version)
        except NotFound:
            raise NotFound(f"{decision_point} has no version {to_version} with a catalog to roll back to") from None
        return self.put(document, actor, expected_version, validate_only, origin="rollback")

    def delete(self, decision_point: str, actor: str, expected_version: int | None) -> CatalogVersion:
        try:
            version = self.store.delete(decision_point, actor, expected_version)
        except UnknownVersion as err:
            raise NotFound(str(err)) from None
        except VersionConflict as err:
            raise Aborted(str(err)) from None
        self._serve()  # the model is snapshotted as it stops being served: re-creating the name resumes it
        return version

    # --- models --------------------------------------------------------------------------------------

    def export_model(self, decision_point: str) -> tuple[ServedModel, bytes]:
        model = self._model(decision_point)
        return model, policy_bytes(model.policy)

    def import_model(self, decision_point: str, data: bytes, actor: str) -> ServedModel:
        model = self._model(decision_point)
        try:
            policy = policy_from_bytes(model.spec, data)
        except Exception:
            raise FailedPrecondition(
                f"the data is not a VW model of {decision_point}'s learning flags ({model.spec.vw_args()}): export "
                "it from a decision point with the same flags"
            ) from None
        served = self.models.replace_policy(decision_point, policy)
        self.store.note(decision_point, actor, "import_model", f"model {served.version} imported ({len(data)} bytes)")
        return served

    def reset_model(self, decision_point: str, actor: str) -> ServedModel:
        model = self._model(decision_point)
        served = self.models.replace_policy(decision_point, VWPolicy(model.spec))
        self.store.note(decision_point, actor, "reset_model", f"model reset: {served.version} learns from scratch")
        return served

    # --- internals -----------------------------------------------------------------------------------

    def _model(self, decision_point: str) -> ServedModel:
        model = self.models.get(decision_point)
        if model is None:
            raise NotFound(f"unknown decision point {decision_point!r}; known: {sorted(self.service.catalogs)}")
        return model

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

    def _serve(self) -> None:
        """Serve the store's current catalogs at once (models follow their learning flags)."""
        self.service.use_catalogs(served_catalogs(self.store))


def _would_be(history: list[CatalogVersion], document: dict[str, Any], actor: str, origin: str) -> CatalogVersion:
    """The version a change would get (validate_only)."""
    name = str(document["decision_point"])
    number = history[-1].version + 1 if history else 1
    return CatalogVersion(name, number, document, content_hash(document), _origin(origin), actor, 0.0)


def _origin(origin: str) -> Origin:
    return "rollback" if origin == "rollback" else "api"


def served_catalogs(store: FileCatalogStore) -> dict[str, Catalog]:
    """The store's current catalogs, compiled: what the server serves."""
    return {
        name: load_catalog_document(v.document, store.root / name / f"{v.version:010d}.json")
        for name, v in store.current().items()
        if v.document is not None
    }
