"""Decide over a real gRPC channel: decisions, ranking, replay, narrowing, request actions, errors."""

from __future__ import annotations

import math
import uuid
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from tailor.v1 import decision_service_pb2 as pb

from ..conftest import LAYOUTS, RunningServer, fv, write_catalog


def violations(err: grpc.RpcError) -> dict[str, str]:
    """The google.rpc.BadRequest field violations carried by an error status."""
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None, "no rich status details"
    out: dict[str, str] = {}
    for detail in status.details:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            out.update({v.field: v.description for v in bad.field_violations})
    return out


def decide_error(server: RunningServer, **fields: Any) -> grpc.RpcError:
    request = pb.DecideRequest(**{"session_id": "s1", "decision_point": "home_layout", **fields})
    with pytest.raises(grpc.RpcError) as info:
        server.stub.Decide(request, timeout=5)
    return info.value


def test_decide_returns_a_catalog_action_with_a_full_ranking(server: RunningServer) -> None:
    r = server.stub.Decide(
        pb.DecideRequest(session_id="s1", decision_point="home_layout", context={"device": fv("mobile")}), timeout=5
    )
    assert r.action_id in LAYOUTS
    assert r.event_id
    assert r.model_version
    ranked = [x.action_id for x in r.ranking]
    assert sorted(ranked) == sorted(LAYOUTS)
    probs = [x.probability for x in r.ranking]
    assert math.isclose(sum(probs), 1.0, abs_tol=1e-9)
    assert probs == sorted(probs, reverse=True)
    assert dict(zip(ranked, probs, strict=True))[r.action_id] == pytest.approx(r.probability)
    assert dict(r.payload) == {"template": f"{r.action_id}_v1"}
    assert server.metric("tailor_decisions_total", {"decision_point": "home_layout"}) == 1


def test_ties_in_ranking_keep_candidate_order(server: RunningServer) -> None:
    r = server.client.decide("s1", "home_layout")  # a fresh model gives every action the same probability
    assert [x.action_id for x in r.ranking] == list(LAYOUTS)


def test_generated_event_ids_are_unique_128_bit_hex(server: RunningServer) -> None:
    ids = [server.client.decide(f"s{i}", "home_layout").event_id for i in range(600)]  # > 2 pools of 256
    assert len(set(ids)) == 600
    assert all(len(e) == 32 and int(e, 16) >= 0 for e in ids)


def test_same_event_id_returns_the_same_decision(server: RunningServer) -> None:
    event_id = "ev-" + uuid.uuid4().hex
    first = server.client.decide("s1", "home_layout", event_id=event_id, context={"device": "mobile"})
    again = server.client.decide("s1", "home_layout", event_id=event_id, context={"device": "desktop"})
    assert first == again
    assert first.event_id == event_id
    assert server.metric("tailor_decisions_replayed_total", {"decision_point": "home_layout"}) == 1


def test_sampling_is_seeded_by_event_id(start_server: Any, catalog_dir: Path, tmp_path: Path) -> None:
    """Two fresh servers given the same event ids draw the same actions: decisions are replayable."""
    ids = [f"ev-{i}" for i in range(30)]
    a = start_server(catalog_dir, data_dir=tmp_path / "a")
    b = start_server(catalog_dir, data_dir=tmp_path / "b")
    drawn_a = [a.client.decide("s", "home_layout", event_id=e).action_id for e in ids]
    drawn_b = [b.client.decide("s", "home_layout", event_id=e).action_id for e in ids]
    assert drawn_a == drawn_b
    assert len(set(drawn_a)) > 1  # and they are draws, not a constant


def test_event_id_reused_by_another_session_is_invalid(server: RunningServer) -> None:
    server.client.decide("s1", "home_layout", event_id="shared-id")
    err = decide_error(server, session_id="s2", event_id="shared-id")
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "event_id" in violations(err)


def test_candidates_are_narrowed_and_excluded(server: RunningServer) -> None:
    r = server.client.decide(
        "s1", "home_layout", candidate_action_ids=["grid", "editorial"], excluded_action_ids=["grid"]
    )
    assert r.action_id == "editorial"
    assert [x.action_id for x in r.ranking] == ["editorial"]
    assert r.probability == pytest.approx(1.0)


def test_excluding_every_candidate_is_a_failed_precondition(server: RunningServer) -> None:
    err = decide_error(server, excluded_action_ids=list(LAYOUTS))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_request_supplied_actions_replace_the_catalog(server: RunningServer) -> None:
    skus: dict[str, dict[str, str | float]] = {f"sku{i}": {"price": 10 + i, "cat": f"c{i % 3}"} for i in range(8)}
    r = server.client.decide("s1", "home_layout", actions=skus)
    assert {x.action_id for x in r.ranking} == set(skus)
    assert r.action_id in skus
    assert dict(r.payload) == {}


def test_a_catalog_without_actions_needs_request_actions(start_server: Any, tmp_path: Path) -> None:
    folder = tmp_path / "cats"
    folder.mkdir()
    write_catalog(folder, "pdp_recs", {})
    server = start_server(folder)
    err = decide_error(server, decision_point="pdp_recs")
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    r = server.client.decide("s1", "pdp_recs", actions={"a": {"x": 1}, "b": {"x": 2}})
    assert r.action_id in {"a", "b"}


def test_unknown_decision_point_is_not_found(server: RunningServer) -> None:
    err = decide_error(server, decision_point="no_such_point")
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert "no_such_point" in (err.details() or "")


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"session_id": ""}, "session_id"),
        ({"decision_point": ""}, "decision_point"),
        ({"session_id": "s" * 257}, "session_id"),
        ({"event_id": "e" * 257}, "event_id"),
        ({"context": {"x": pb.FeatureValue(number=float("nan"))}}, "context[x]"),
        ({"context": {"x": pb.FeatureValue(number=float("inf"))}}, "context[x]"),
        ({"context": {"x": pb.FeatureValue()}}, "context[x]"),
        ({"candidate_action_ids": ["nope"]}, "candidate_action_ids[0]"),
        ({"candidate_action_ids": [""]}, "candidate_action_ids[0]"),
        ({"actions": [pb.Action(id="")]}, "actions[0].id"),
        ({"actions": [pb.Action(id="a"), pb.Action(id="a")]}, "actions[1].id"),
        (
            {"actions": [pb.Action(id="a", features={"p": pb.FeatureValue(number=float("nan"))})]},
            "actions[0].features[p]",
        ),
        ({"actions": [pb.Action(id=f"a{i}") for i in range(257)]}, "actions"),
        ({"actions": [pb.Action(id="a", features={f"f{i}": fv(1) for i in range(65)})]}, "actions[0].features"),
        ({"context": {f"f{i}": fv(1) for i in range(257)}}, "context"),
        ({"context": {"k": fv("v" * 1025)}}, "context[k]"),
        ({"context": {"é" * 129: fv(1)}}, "context[" + "é" * 32 + "...]"),
        ({"session_id": "é" * 129}, "session_id"),
    ],
)
def test_bad_requests_are_invalid_argument_naming_the_field(
    server: RunningServer, fields: dict[str, Any], field: str
) -> None:
    err = decide_error(server, **fields)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in violations(err), violations(err)
    assert "Traceback" not in (err.details() or "")
    method = {"method": "Decide", "code": "INVALID_ARGUMENT"}
    assert server.metric("tailor_rpc_errors_total", method) == 1


def test_every_violation_is_reported_at_once(server: RunningServer) -> None:
    err = decide_error(server, session_id="", context={"x": pb.FeatureValue(number=float("nan"))})
    assert {"session_id", "context[x]"} <= set(violations(err))


def test_injected_vw_syntax_stays_inside_its_feature(server: RunningServer) -> None:
    """A context value full of VW syntax is one feature, not a namespace or a label."""
    evil: dict[str, str | float] = {"device": "x |a id=grid shared:1 \n|c", "a|b:c": 1.0}
    r = server.client.decide("s1", "home_layout", context=evil)
    assert sorted(x.action_id for x in r.ranking) == sorted(LAYOUTS)
    record = server.record(r.event_id)
    assert record is not None
    shared = record.shared
    assert shared.count("|") == 1 and "\n" not in shared


def test_limits_are_configurable(start_server: Any, catalog_dir: Path) -> None:
    from server import Limits

    server = start_server(catalog_dir, limits=Limits(max_context_features=2))
    err = decide_error(server, context={"a": fv(1), "b": fv(2), "c": fv(3)})
    assert "context" in violations(err)
    assert server.client.decide("s1", "home_layout", context={"a": 1, "b": 2}).action_id in LAYOUTS


def test_an_unexpected_failure_is_internal_with_an_error_id_and_no_trace(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(shared: str, actions: object) -> list[float]:
        raise RuntimeError("secret internal detail")

    model = server.call(lambda: server.app.models.get("home_layout"))
    assert model is not None
    server.call(lambda: setattr(model.policy, "predict", broken))  # fault injection into the real server
    err = decide_error(server)
    assert err.code() == grpc.StatusCode.INTERNAL
    details = err.details() or ""
    assert "secret" not in details and "Traceback" not in details
    error_id = details.split("(id ")[1].split(")")[0]
    assert any(error_id in r.getMessage() and r.exc_info for r in caplog.records)  # the log has the id and trace
    assert server.metric("tailor_rpc_errors_total", {"method": "Decide", "code": "INTERNAL"}) == 1
