"""The gRPC face of administration: `tailor.v1.AdminService`, protobuf in and out around `CatalogAdmin`.

Reads need the `observe` role, changes `admin` (the role map in `_keys.py`); every change is audited under
the caller's key name (`caller()`). Without the catalog store (Redis mode, for now) every call is
FAILED_PRECONDITION, saying so.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Any

import grpc
import yaml
from google.protobuf import json_format, struct_pb2, timestamp_pb2

from server.admin import CatalogAdmin, Change
from server.core import Metrics, invalid
from server.state.catalogs import AuditEvent, CatalogVersion
from tailor.v1 import admin_service_pb2 as apb
from tailor.v1 import admin_service_pb2_grpc as apb_grpc

from ._guard import caller
from ._status import stream_errors, unary_errors

Ctx = grpc.aio.ServicerContext[Any, Any]

_ORIGINS = {
    "directory": apb.CATALOG_ORIGIN_DIRECTORY,
    "api": apb.CATALOG_ORIGIN_API,
    "rollback": apb.CATALOG_ORIGIN_ROLLBACK,
}
_EFFECTS = {"kept": apb.MODEL_EFFECT_KEPT, "new_model": apb.MODEL_EFFECT_NEW_MODEL, "none": apb.MODEL_EFFECT_NONE}
#: Export and import move the model file in chunks of this size (well under the 4 MiB message limit).
CHUNK_BYTES = 1 << 20
MAX_AUDIT_PAGE = 1000


def _timestamp(at: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(int(at * 1e9))
    return stamp


def version_info(v: CatalogVersion) -> apb.CatalogVersionInfo:
    return apb.CatalogVersionInfo(
        decision_point=v.decision_point,
        version=v.version,
        deleted=v.document is None,
        origin=_ORIGINS[v.origin],
        actor=v.actor,
        created_at=_timestamp(v.at) if v.at else None,
    )


def _struct(document: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(document)
    return out


def _name(value: str, field: str = "decision_point") -> str:
    if not value:
        raise invalid(field, "name a decision point")
    return value


def _expected(request: Any) -> int | None:
    return request.expected_version if request.HasField("expected_version") else None


class AdminServicer(apb_grpc.AdminServiceServicer):
    def __init__(self, admin: CatalogAdmin, metrics: Metrics) -> None:
        self.admin = admin
        self.metrics = metrics

    def record_error(self, method: str, code: grpc.StatusCode) -> None:
        self.metrics.rpc_errors.labels(method, code.name).inc()

    def _change(self, change: Change, response: type[Any]) -> Any:
        if change.changed:
            self.metrics.catalog_changes.labels(change.version.decision_point, change.version.origin).inc()
        return response(
            info=version_info(change.version),
            changed=change.changed,
            diff=change.diff,
            model_effect=_EFFECTS[change.model_effect],
        )

    @unary_errors
    async def ListDecisionPoints(
        self, request: apb.ListDecisionPointsRequest, context: Ctx
    ) -> apb.ListDecisionPointsResponse:
        rows = [
            apb.DecisionPointSummary(
                decision_point=catalog.name,
                current=version_info(version),
                action_ids=list(catalog.action_ids),
                model_version=model_version,
            )
            for version, catalog, model_version in await self.admin.decision_points()
        ]
        return apb.ListDecisionPointsResponse(decision_points=rows)

    @unary_errors
    async def GetDecisionPoint(
        self, request: apb.GetDecisionPointRequest, context: Ctx
    ) -> apb.GetDecisionPointResponse:
        if request.version < 0:
            raise invalid("version", "a version is 1 or more (0: the current one)")
        version, document = await self.admin.get(_name(request.decision_point), request.version)
        return apb.GetDecisionPointResponse(
            info=version_info(version),
            catalog=_struct(document),
            yaml=yaml.safe_dump(document, sort_keys=False),
            model_version=self.admin.model_version(version.decision_point),
        )

    @unary_errors
    async def PutDecisionPoint(
        self, request: apb.PutDecisionPointRequest, context: Ctx
    ) -> apb.PutDecisionPointResponse:
        if not request.HasField("catalog"):
            raise invalid("catalog", "send the catalog: the keys of a catalog YAML file")
        document = _document(request.catalog)
        change = await self.admin.put(document, caller(), _expected(request), request.validate_only)
        return self._change(change, apb.PutDecisionPointResponse)  # type: ignore[no-any-return]

    @unary_errors
    async def DeleteDecisionPoint(
        self, request: apb.DeleteDecisionPointRequest, context: Ctx
    ) -> apb.DeleteDecisionPointResponse:
        version = await self.admin.delete(_name(request.decision_point), caller(), _expected(request))
        self.metrics.catalog_changes.labels(version.decision_point, "api").inc()
        return apb.DeleteDecisionPointResponse(info=version_info(version))

    @unary_errors
    async def ListCatalogVersions(
        self, request: apb.ListCatalogVersionsRequest, context: Ctx
    ) -> apb.ListCatalogVersionsResponse:
        versions = await self.admin.versions(_name(request.decision_point))
        return apb.ListCatalogVersionsResponse(versions=[version_info(v) for v in versions])

    @unary_errors
    async def RollbackDecisionPoint(
        self, request: apb.RollbackDecisionPointRequest, context: Ctx
    ) -> apb.RollbackDecisionPointResponse:
        if request.to_version < 1:
            raise invalid("to_version", "name a kept version (1 or more): ListCatalogVersions lists them")
        change = await self.admin.rollback(
            _name(request.decision_point), request.to_version, caller(), _expected(request), request.validate_only
        )
        return self._change(change, apb.RollbackDecisionPointResponse)  # type: ignore[no-any-return]

    @stream_errors
    async def ExportModel(
        self, request: apb.ExportModelRequest, context: Ctx
    ) -> AsyncIterator[apb.ExportModelResponse]:
        model = await self.admin.model_admin.export(_name(request.decision_point))
        data = model.data
        first = apb.ExportModelResponse(model_version=model.version, vw_args=model.vw_args)
        for start in range(0, max(len(data), 1), CHUNK_BYTES):
            chunk = data[start : start + CHUNK_BYTES]
            if start == 0:
                first.data = chunk
                yield first
            else:
                yield apb.ExportModelResponse(data=chunk)

    @unary_errors
    async def ImportModel(
        self, request_iterator: AsyncIterator[apb.ImportModelRequest], context: Ctx
    ) -> apb.ImportModelResponse:
        name, parts, size = "", [], 0
        async for chunk in request_iterator:
            if chunk.decision_point and name and chunk.decision_point != name:
                raise invalid("decision_point", "name one decision point, in the first message")
            name = name or chunk.decision_point
            size += len(chunk.data)
            if size > 1 << 30:
                raise invalid("data", "a model file is at most 1 GiB")
            parts.append(chunk.data)
        if not parts or not b"".join(parts):
            raise invalid("data", "send the model file exported by ExportModel")
        version = await self.admin.model_admin.import_(_name(name), b"".join(parts), caller(), context.time_remaining())
        return apb.ImportModelResponse(model_version=version)

    @unary_errors
    async def ResetModel(self, request: apb.ResetModelRequest, context: Ctx) -> apb.ResetModelResponse:
        version = await self.admin.model_admin.reset(_name(request.decision_point), caller(), context.time_remaining())
        return apb.ResetModelResponse(model_version=version)

    @unary_errors
    async def ListAuditEvents(self, request: apb.ListAuditEventsRequest, context: Ctx) -> apb.ListAuditEventsResponse:
        if not 0 <= request.page_size <= MAX_AUDIT_PAGE:
            raise invalid("page_size", f"between 1 and {MAX_AUDIT_PAGE} (0: 100)")
        events = await self.admin.audit(request.decision_point, request.page_size or 100)
        return apb.ListAuditEventsResponse(events=[_event(e) for e in events])


def _document(catalog: struct_pb2.Struct) -> dict[str, Any]:
    """The catalog as plain data; a number JSON cannot hold (NaN, infinity) is INVALID_ARGUMENT naming it."""

    def plain(value: struct_pb2.Value, path: str) -> Any:
        kind = value.WhichOneof("kind")
        if kind == "number_value":
            if not math.isfinite(value.number_value):
                raise invalid(path, f"{value.number_value} is not a number a catalog can hold")
            return value.number_value
        if kind == "struct_value":
            return {k: plain(v, f"{path}.{k}") for k, v in value.struct_value.fields.items()}
        if kind == "list_value":
            return [plain(v, f"{path}.{i}") for i, v in enumerate(value.list_value.values)]
        return json_format.MessageToDict(value)  # null, bool, string

    return {k: plain(v, f"catalog.{k}") for k, v in catalog.fields.items()}


def _event(e: AuditEvent) -> apb.AuditEvent:
    return apb.AuditEvent(
        at=_timestamp(e.at),
        actor=e.actor,
        action=e.action,
        decision_point=e.decision_point,
        version=e.version,
        diff=e.diff,
        note=e.note,
    )
