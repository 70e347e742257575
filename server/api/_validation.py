"""Request validation: protobuf messages in, plain validated values out, every violation named.

All violations of a request are collected and reported together as one INVALID_ARGUMENT with
`google.rpc.BadRequest` field violations, so a client fixes its request in one round.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from server.core import EVENT_KINDS, EventKind, FieldViolation, InvalidArgument, Limits, TrackedEvent
from server.decisions import DecideQuery, Features, RequestAction
from tailor.v1 import decision_service_pb2 as pb


class _Violations(list[FieldViolation]):
    def add(self, field: str, description: str) -> None:
        self.append(FieldViolation(field, description))

    def raise_if_any(self) -> None:
        if self:
            raise InvalidArgument(self)


def check_id(v: _Violations, field: str, value: str, limits: Limits, required: bool = True) -> None:
    if not value:
        if required:
            v.add(field, "must not be empty")
        return
    if len(value) > limits.max_id_bytes // 4 and len(value.encode()) > limits.max_id_bytes:
        v.add(field, f"longer than {limits.max_id_bytes} bytes")


def features(v: _Violations, field: str, values: Mapping[str, pb.FeatureValue], limit: int, limits: Limits) -> Features:
    """Feature map to (key, value) pairs, checking count, names, sizes and finiteness."""
    if len(values) > limit:
        v.add(field, f"{len(values)} features; at most {limit} allowed")
        return []
    out: Features = []
    max_key, max_text, max_number = limits.max_id_bytes, limits.max_text_bytes, limits.max_feature_magnitude
    for key in values:  # a protobuf map's items() iterates in Python (collections.abc); indexing stays in C
        fv = values[key]
        kind = fv.WhichOneof("value")
        if kind == "number":
            number = fv.number
            if not math.isfinite(number):
                v.add(f"{field}[{key}]", f"not a finite number ({number})")
            elif abs(number) > max_number:
                v.add(
                    f"{field}[{key}]",
                    f"{number:g} is outside ±{max_number:g}: VW learns in float32 and crosses features, so larger "
                    "numbers overflow; scale them (a log, or a difference instead of a timestamp)",
                )
            out.append((key, number))
        elif kind == "text":
            text = fv.text
            if len(text) > max_text // 4 and len(text.encode()) > max_text:
                v.add(f"{field}[{key}]", f"text longer than {max_text} bytes")
            out.append((key, text))
        else:
            v.add(f"{field}[{key}]", "set text or number")
        if not key:
            v.add(field, "feature names must not be empty")
        elif len(key) > max_key // 4 and len(key.encode()) > max_key:
            v.add(f"{field}[{key[:32]}...]", f"feature name longer than {max_key} bytes")
    # Protobuf map order differs between processes; VW's float32 sums depend on feature order. Sorting
    # (keys are unique) makes the same request the same example everywhere, so learning replays exactly.
    out.sort()  # keys are unique, so values are never compared
    return out


def _ids(v: _Violations, field: str, values: Iterable[str], limits: Limits) -> list[str]:
    out = list(values)
    if len(out) > limits.max_actions:
        v.add(field, f"{len(out)} ids; at most {limits.max_actions} allowed")
    for i, value in enumerate(out):
        check_id(v, f"{field}[{i}]", value, limits)
    return out


def decide_query(request: pb.DecideRequest, limits: Limits) -> DecideQuery:
    v = _Violations()
    check_id(v, "session_id", request.session_id, limits)
    check_id(v, "decision_point", request.decision_point, limits)
    check_id(v, "event_id", request.event_id, limits, required=False)
    context = features(v, "context", request.context, limits.max_context_features, limits)
    actions: list[RequestAction] = []
    if len(request.actions) > limits.max_actions:
        v.add("actions", f"{len(request.actions)} actions; at most {limits.max_actions} allowed")
    else:
        seen: set[str] = set()
        for i, a in enumerate(request.actions):
            check_id(v, f"actions[{i}].id", a.id, limits)
            if a.id in seen:
                v.add(f"actions[{i}].id", f"duplicate action id {a.id!r}")
            seen.add(a.id)
            actions.append(
                RequestAction(
                    a.id, features(v, f"actions[{i}].features", a.features, limits.max_action_features, limits)
                )
            )
    candidates = _ids(v, "candidate_action_ids", request.candidate_action_ids, limits)
    excluded = _ids(v, "excluded_action_ids", request.excluded_action_ids, limits)
    v.raise_if_any()
    return DecideQuery(
        session_id=request.session_id,
        decision_point=request.decision_point,
        context=context,
        actions=actions,
        candidate_action_ids=candidates,
        excluded_action_ids=excluded,
        event_id=request.event_id,
        defer_activation=request.defer_activation,
    )


def batch_size(field: str, size: int, limits: Limits) -> None:
    if size > limits.max_batch:
        raise InvalidArgument([FieldViolation(field, f"{size} items in one message; at most {limits.max_batch}")])


def event_id(value: str, limits: Limits) -> str:
    v = _Violations()
    check_id(v, "event_id", value, limits)
    v.raise_if_any()
    return value


_EVENT_KINDS: dict[int, EventKind] = {pb.EventType.Value(f"EVENT_TYPE_{kind.upper()}"): kind for kind in EVENT_KINDS}


def tracked_events(
    request: pb.TrackEventsRequest, limits: Limits, now: float, max_skew: float, max_age: float
) -> tuple[list[TrackedEvent], list[str]]:
    """The valid events of a batch, and a rejection reason for each invalid one (never an error)."""
    batch_size("events", len(request.events), limits)
    valid: list[TrackedEvent] = []
    rejected: list[str] = []
    max_id = limits.max_id_bytes
    quarter = max_id // 4  # a string this short cannot exceed max_id bytes in UTF-8: no encode needed
    for e in request.events:
        session_id, product_id, category, event_id = e.session_id, e.product_id, e.category, e.id
        kind = _EVENT_KINDS.get(e.type)
        price, discount = e.price, e.discount
        if not session_id:
            reason = "missing_session_id"
        elif kind is None:
            reason = "unknown_type"
        elif not math.isfinite(price) or price < 0:
            reason = "bad_price"
        elif not math.isfinite(discount) or not 0.0 <= discount <= 1.0:
            reason = "bad_discount"
        elif max(len(session_id), len(product_id), len(category), len(event_id)) > quarter and any(
            len(s.encode()) > max_id for s in (session_id, product_id, category, event_id)
        ):
            reason = "oversized_field"
        elif e.attributes and (
            len(e.attributes) > limits.max_context_features
            or not _finite_features(e.attributes, limits.max_feature_magnitude)
        ):
            reason = "bad_attributes"
        else:
            timestamp = e.timestamp.seconds + e.timestamp.nanos / 1e9 if e.HasField("timestamp") else now
            if timestamp > now + max_skew:
                reason = "future_timestamp"
            elif timestamp < now - max_age:
                reason = "stale_timestamp"
            else:
                valid.append(TrackedEvent(session_id, kind, timestamp, product_id, category, price, discount, event_id))
                continue
        rejected.append(reason)
    return valid, rejected


def _finite_features(values: Mapping[str, pb.FeatureValue], max_number: float) -> bool:
    return all(fv.WhichOneof("value") == "text" or abs(fv.number) <= max_number for fv in values.values())


def session_id(value: str, limits: Limits) -> str:
    v = _Violations()
    check_id(v, "session_id", value, limits)
    v.raise_if_any()
    return value
