"""A small typed client for gateways.

with TailorClient("localhost:50051") as tailor:
    d = tailor.decide("session-1", "home_layout", context={"device": "mobile"})
    tailor.report_rewards([(d.event_id, 1.0, "click-1")])

Against a server with API keys and TLS:

with TailorClient("tailor.shop.internal:50051", api_key=key, root_certificates=Path("ca.pem").read_bytes()) as tailor:
    ...

AdminService (catalogs with versions, rollback, models, the audit log) goes through the same client:

with TailorClient("localhost:50051", api_key=admin_key) as tailor:
    print([(v.version, v.actor) for v in tailor.list_catalog_versions("home_layout")])
    tailor.rollback_decision_point("home_layout", to_version=1)
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any

import grpc
from google.protobuf import json_format, struct_pb2

from tailor.v1 import admin_service_pb2 as apb
from tailor.v1 import admin_service_pb2_grpc as apb_grpc
from tailor.v1 import decision_service_pb2 as pb
from tailor.v1 import decision_service_pb2_grpc as pb_grpc

Scalar = str | float | int


def feature_map(values: Mapping[str, Scalar]) -> dict[str, pb.FeatureValue]:
    """Plain values to FeatureValues: strings are categorical, numbers numeric."""
    out: dict[str, pb.FeatureValue] = {}
    for key, value in values.items():
        if isinstance(value, bool):
            raise TypeError(f"feature {key!r}: use a string or a number, not a bool")
        out[key] = pb.FeatureValue(text=value) if isinstance(value, str) else pb.FeatureValue(number=float(value))
    return out


def catalog_struct(catalog: Mapping[str, Any]) -> struct_pb2.Struct:
    """A catalog document (the keys of a catalog YAML file, e.g. its `yaml.safe_load`) as the Struct
    AdminService takes.

    A timestamp YAML read (`active_from: 2026-12-20T00:00:00+01:00`) travels as its RFC 3339 text. Anything
    else JSON cannot hold (a date without a time, NaN, a number as a key) raises ValueError naming where it
    is, to be quoted in the file rather than changed on the way. Numbers travel as doubles; the server
    normalizes them."""
    document = _json_value(catalog, "catalog")
    return json_format.ParseDict(document, struct_pb2.Struct())


def catalog_dict(catalog: struct_pb2.Struct) -> dict[str, Any]:
    """A catalog Struct (GetDecisionPoint's `catalog`) as a plain dict; numbers come back as floats."""
    document: dict[str, Any] = json_format.MessageToDict(catalog)
    return document


def _json_value(value: object, where: str) -> Any:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{where}: key {key!r} is not a string; quote it")
            out[key] = _json_value(item, f"{where}.{key}")
        return out
    if isinstance(value, list | tuple):
        return [_json_value(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where}: {value} is not a finite number")
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    if value is not None and not isinstance(value, str | int | float):  # bool is an int
        raise ValueError(f"{where}: a {type(value).__name__} ({value}) cannot travel in a catalog; quote it")
    return value


#: The least deadline of model imports and resets: in Redis mode the learner applies them (up to 10 s, and a grace).
MODEL_COMMAND_TIMEOUT = 15.0


class TailorClient:
    """Blocking client over one channel. Errors surface as grpc.RpcError with the server's status."""

    def __init__(
        self,
        target: str,
        *,
        api_key: str | None = None,
        root_certificates: bytes | None = None,
        client_cert: bytes | None = None,
        client_key: bytes | None = None,
        tls: bool = False,
        channel: grpc.Channel | None = None,
        timeout: float = 5.0,
    ) -> None:
        """`api_key` is sent as `authorization: Bearer` on every call. TLS is used when `tls` is set or any
        certificate is given: `root_certificates` (PEM) to trust instead of the system's roots, and
        `client_cert`/`client_key` (PEM) for a server that requires client certificates (mTLS)."""
        if channel is None:
            if tls or root_certificates is not None or client_cert is not None or client_key is not None:
                credentials = grpc.ssl_channel_credentials(root_certificates, client_key, client_cert)
                channel = grpc.secure_channel(target, credentials)
            else:
                channel = grpc.insecure_channel(target)
        self._channel = channel
        self._stub = pb_grpc.DecisionServiceStub(self._channel)
        self._admin = apb_grpc.AdminServiceStub(self._channel)
        self._metadata = (("authorization", f"Bearer {api_key}"),) if api_key else None
        self.timeout = timeout

    def decide(
        self,
        session_id: str,
        decision_point: str,
        *,
        context: Mapping[str, Scalar] | None = None,
        actions: Mapping[str, Mapping[str, Scalar]] | None = None,
        candidate_action_ids: Sequence[str] = (),
        excluded_action_ids: Sequence[str] = (),
        event_id: str = "",
        defer_activation: bool = False,
    ) -> pb.DecideResponse:
        """Ask for a decision. `actions` (id -> features) replaces the catalog's candidates."""
        request = pb.DecideRequest(
            session_id=session_id,
            decision_point=decision_point,
            context=feature_map(context or {}),
            actions=[pb.Action(id=a, features=feature_map(f)) for a, f in (actions or {}).items()],
            candidate_action_ids=candidate_action_ids,
            excluded_action_ids=excluded_action_ids,
            event_id=event_id,
            defer_activation=defer_activation,
        )
        response: pb.DecideResponse = self._stub.Decide(request, timeout=self.timeout, metadata=self._metadata)
        return response

    def report_rewards(self, rewards: Iterable[tuple[str, float, str]]) -> list[pb.RewardResult]:
        """Report (event_id, value, reward_id) rewards in one message; returns a status per reward."""
        request = pb.ReportRewardsRequest(rewards=[pb.Reward(event_id=e, value=v, reward_id=r) for e, v, r in rewards])
        responses = list(self._stub.ReportRewards(iter([request]), timeout=self.timeout, metadata=self._metadata))
        return [result for response in responses for result in response.results]

    def track_events(self, events: Sequence[pb.SessionEvent], batch: int = 1000) -> pb.TrackEventsResponse:
        """Stream behaviour events (in messages of at most `batch`); returns the accepted/rejected counts."""
        requests = (pb.TrackEventsRequest(events=events[i : i + batch]) for i in range(0, len(events), batch))
        response: pb.TrackEventsResponse = self._stub.TrackEvents(
            requests, timeout=self.timeout, metadata=self._metadata
        )
        return response

    def get_session(self, session_id: str) -> dict[str, str | float]:
        """The session's current intent features (raises NOT_FOUND for an unknown or expired session)."""
        response = self._stub.GetSession(
            pb.GetSessionRequest(session_id=session_id), timeout=self.timeout, metadata=self._metadata
        )
        return {k: v.text if v.WhichOneof("value") == "text" else v.number for k, v in response.features.items()}

    def delete_session(self, session_id: str) -> bool:
        """Erase a session's context; False if there was none."""
        response = self._stub.DeleteSession(
            pb.DeleteSessionRequest(session_id=session_id), timeout=self.timeout, metadata=self._metadata
        )
        return response.deleted

    def activate(self, event_id: str) -> None:
        """Start the reward window of a decision made with defer_activation."""
        self._stub.Activate(pb.ActivateRequest(event_id=event_id), timeout=self.timeout, metadata=self._metadata)

    # --- AdminService: reads need the `observe` role, changes `admin` ------------------------------------

    def list_decision_points(self) -> list[apb.DecisionPointSummary]:
        """Every decision point (by name) with its current catalog version, action ids and model version."""
        response = self._admin.ListDecisionPoints(
            apb.ListDecisionPointsRequest(), timeout=self.timeout, metadata=self._metadata
        )
        return list(response.decision_points)

    def get_decision_point(self, name: str, version: int = 0) -> apb.GetDecisionPointResponse:
        """A decision point's current catalog, or a kept `version` of it: `catalog_dict(response.catalog)` is
        the document, `response.yaml` the same as YAML, `response.info` its version (NOT_FOUND if unknown)."""
        request = apb.GetDecisionPointRequest(decision_point=name, version=version)
        response: apb.GetDecisionPointResponse = self._admin.GetDecisionPoint(
            request, timeout=self.timeout, metadata=self._metadata
        )
        return response

    def put_decision_point(
        self, catalog: Mapping[str, Any], expected_version: int | None = None, validate_only: bool = False
    ) -> apb.PutDecisionPointResponse:
        """Create or replace a catalog (the keys of a catalog YAML file); served at once.

        `expected_version` guards against lost updates: the version you read (0: the decision point must not
        exist yet); if it changed meanwhile the call fails with ABORTED and changes nothing. `validate_only`
        returns the diff, the model effect and the version it would get, and changes nothing. An invalid
        catalog is INVALID_ARGUMENT with a field violation per problem. `changed` is False (and no version
        is made) when the catalog equals the current one."""
        request = apb.PutDecisionPointRequest(
            catalog=catalog_struct(catalog), expected_version=expected_version, validate_only=validate_only
        )
        response: apb.PutDecisionPointResponse = self._admin.PutDecisionPoint(
            request, timeout=self.timeout, metadata=self._metadata
        )
        return response

    def delete_decision_point(self, name: str, expected_version: int | None = None) -> apb.CatalogVersionInfo:
        """Stop serving a decision point (its history and model are kept); returns the deleting version."""
        request = apb.DeleteDecisionPointRequest(decision_point=name, expected_version=expected_version)
        response = self._admin.DeleteDecisionPoint(request, timeout=self.timeout, metadata=self._metadata)
        return response.info

    def list_catalog_versions(self, name: str) -> list[apb.CatalogVersionInfo]:
        """Every kept version of a decision point's catalog, newest first."""
        request = apb.ListCatalogVersionsRequest(decision_point=name)
        response = self._admin.ListCatalogVersions(request, timeout=self.timeout, metadata=self._metadata)
        return list(response.versions)

    def rollback_decision_point(
        self, name: str, to_version: int, expected_version: int | None = None, validate_only: bool = False
    ) -> apb.RollbackDecisionPointResponse:
        """Make kept version `to_version` current again, as a new version (guards as `put_decision_point`)."""
        request = apb.RollbackDecisionPointRequest(
            decision_point=name, to_version=to_version, expected_version=expected_version, validate_only=validate_only
        )
        response: apb.RollbackDecisionPointResponse = self._admin.RollbackDecisionPoint(
            request, timeout=self.timeout, metadata=self._metadata
        )
        return response

    def export_model(self, name: str) -> tuple[str, bytes]:
        """The decision point's served model: (model version, VW model file)."""
        chunks = self._admin.ExportModel(
            apb.ExportModelRequest(decision_point=name), timeout=self.timeout, metadata=self._metadata
        )
        version, parts = "", []
        for chunk in chunks:
            version = version or chunk.model_version
            parts.append(chunk.data)
        return version, b"".join(parts)

    def import_model(self, name: str, data: bytes, chunk: int = 1 << 20) -> str:
        """Serve an exported model file (same learning flags) for the decision point; returns the new model
        version. The file travels in messages of `chunk` bytes (well under gRPC's 4 MiB message limit).

        In Redis mode the leading `tailor learn` applies it (a replica never writes a model), so the call waits
        up to the server's TAILOR_MODEL_COMMAND_TIMEOUT_SECONDS (10 s) for it; UNAVAILABLE means no learner
        applied it, and none will. The call's deadline is at least `MODEL_COMMAND_TIMEOUT` seconds."""
        if chunk < 1:
            raise ValueError("chunk is at least 1 byte")

        def requests() -> Iterator[apb.ImportModelRequest]:
            yield apb.ImportModelRequest(decision_point=name, data=data[:chunk])
            for start in range(chunk, len(data), chunk):
                yield apb.ImportModelRequest(data=data[start : start + chunk])

        timeout = max(self.timeout, MODEL_COMMAND_TIMEOUT)
        response = self._admin.ImportModel(requests(), timeout=timeout, metadata=self._metadata)
        return response.model_version

    def reset_model(self, name: str) -> str:
        """Replace the decision point's model with a fresh one; returns the new model version (see `import_model`
        for how long it may take)."""
        response = self._admin.ResetModel(
            apb.ResetModelRequest(decision_point=name),
            timeout=max(self.timeout, MODEL_COMMAND_TIMEOUT),
            metadata=self._metadata,
        )
        return response.model_version

    def list_audit_events(self, decision_point: str = "", page_size: int = 100) -> list[apb.AuditEvent]:
        """Catalog and model changes (who, when, what, the diff), newest first; all decision points when empty."""
        request = apb.ListAuditEventsRequest(decision_point=decision_point, page_size=page_size)
        response = self._admin.ListAuditEvents(request, timeout=self.timeout, metadata=self._metadata)
        return list(response.events)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> TailorClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
