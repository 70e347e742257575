"""Hostile input, property-based, through the real server over gRPC: every RPC, and raw wire bytes.

Whatever a client sends, every call ends with a defined status (never UNKNOWN or INTERNAL, never a
trace), the server stays healthy, and input that is refused leaves a trained model exactly as it was.
This suite is the place to extend when an RPC is added (tests/api/test_keys.py checks its role).
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.core import LearnConfig, ServeConfig
from tailor.v1 import admin_service_pb2 as apb
from tailor.v1 import admin_service_pb2_grpc as apb_grpc
from tailor.v1 import decision_service_pb2 as pb

from ..conftest import LAYOUTS, RunningLearner, RunningServer, write_catalog
from ..redis_server import RedisServer

C = grpc.StatusCode
DEFINED = {C.OK, C.INVALID_ARGUMENT, C.NOT_FOUND, C.FAILED_PRECONDITION, C.RESOURCE_EXHAUSTED, C.OUT_OF_RANGE}
SERVICE = "/tailor.v1.DecisionService/"
WEIRD = [
    "",
    " ",
    "\x00",
    "é" * 50,
    "💥" * 100,
    "a" * 70_000,
    "|",
    ":",
    "shared |x a:1",
    "\n|a x",
    "%7C",
    "nan",
    "__proto__",
]
NUMBERS = [math.nan, math.inf, -math.inf, 1e308, -1e308, 0.0, -0.0, 5e-324, 1.0, -1.0, 2.0]
FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("hostile")
    catalogs = root / "catalogs"
    catalogs.mkdir()
    write_catalog(catalogs, "home_layout", LAYOUTS, reward_window_seconds=0.5)
    write_catalog(  # apprentice mode with exploration, and a holdout: the other ways a decision is served
        catalogs, "apprentice", LAYOUTS, reward_window_seconds=0.5, mode="apprentice", apprentice_exploration=0.2,
        holdout_share=0.3, baseline_action=next(iter(LAYOUTS)),
    )  # fmt: skip
    running = RunningServer(
        ServeConfig(
            catalogs=catalogs, host="127.0.0.1", port=0, metrics_port=None, console_port=0, data_dir=root / "data"
        )
    )
    yield running
    running.stop()


texts = st.one_of(st.text(max_size=40), st.sampled_from(WEIRD), st.text(min_size=200, max_size=1500))
ids = st.one_of(st.sampled_from(["s1", "s2", "e1", "e1", "grid"]), texts)  # reused ids, and junk
numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(NUMBERS))
values = st.one_of(
    texts.map(lambda t: pb.FeatureValue(text=t)),
    numbers.map(lambda n: pb.FeatureValue(number=n)),
    st.just(pb.FeatureValue()),  # neither set
)


@st.composite
def feature_maps(draw: st.DrawFn) -> dict[str, pb.FeatureValue]:
    width = draw(st.sampled_from([0, 1, 5, 300]))  # 300 > the 256 context features allowed
    if width == 300:
        value = draw(values)
        return {f"f{i}": value for i in range(width)}
    return draw(st.dictionaries(texts, values, max_size=width))


@st.composite
def decide_requests(draw: st.DrawFn) -> pb.DecideRequest:
    request = pb.DecideRequest(
        session_id=draw(ids),
        decision_point=draw(st.one_of(st.sampled_from(["home_layout", "apprentice"]), texts)),
        event_id=draw(ids),
        defer_activation=draw(st.booleans()),
    )
    for key, value in draw(feature_maps()).items():
        request.context[key].CopyFrom(value)
    for _ in range(draw(st.sampled_from([0, 0, 1, 3, 300]))):
        action = request.actions.add(id=draw(ids))
        for key, value in draw(feature_maps()).items():
            action.features[key].CopyFrom(value)
    request.candidate_action_ids.extend(draw(st.lists(st.one_of(st.sampled_from(list(LAYOUTS)), ids), max_size=4)))
    request.excluded_action_ids.extend(draw(st.lists(st.one_of(st.sampled_from(list(LAYOUTS)), ids), max_size=4)))
    return request


@st.composite
def session_events(draw: st.DrawFn) -> pb.SessionEvent:
    event = pb.SessionEvent(
        session_id=draw(ids),
        type=pb.EventType.ValueType(draw(st.integers(-3, 12))),  # unknown enum values included
        product_id=draw(ids),
        category=draw(texts),
        price=draw(numbers),
        discount=draw(numbers),
        id=draw(ids),
    )
    for key, value in draw(feature_maps()).items():
        event.attributes[key].CopyFrom(value)
    when = draw(st.sampled_from(["unset", "now", "future", "past", "far", "negative"]))
    now = time.time()
    seconds = {"now": now, "future": now + 86_400, "past": now - 3 * 86_400, "far": 2**40, "negative": -(2**40)}
    if when != "unset":
        event.timestamp.CopyFrom(Timestamp(seconds=int(seconds[when]), nanos=draw(st.integers(0, 999_999_999))))
    return event


rewards = st.builds(pb.Reward, event_id=ids, value=numbers, reward_id=ids)


def code_of(call: Callable[[], Any]) -> tuple[grpc.StatusCode, str]:
    try:
        call()
    except grpc.RpcError as err:
        return err.code(), err.details() or ""
    return C.OK, ""


def assert_defined(outcome: tuple[grpc.StatusCode, str]) -> None:
    code, details = outcome
    assert code in DEFINED, (code, details[:200])
    assert "Traceback" not in details and 'File "' not in details


@FUZZ
@given(request=decide_requests())
def test_decide(server: RunningServer, request: pb.DecideRequest) -> None:
    assert_defined(code_of(lambda: server.stub.Decide(request, timeout=10)))


@FUZZ
@given(batches=st.lists(st.lists(session_events(), max_size=20), min_size=0, max_size=3))
def test_track_events(server: RunningServer, batches: list[list[pb.SessionEvent]]) -> None:
    requests = [pb.TrackEventsRequest(events=b) for b in batches]
    assert_defined(code_of(lambda: server.stub.TrackEvents(iter(requests), timeout=10)))


@FUZZ
@given(batches=st.lists(st.lists(rewards, max_size=20), min_size=0, max_size=3))
def test_report_rewards(server: RunningServer, batches: list[list[pb.Reward]]) -> None:
    requests = [pb.ReportRewardsRequest(rewards=b) for b in batches]
    assert_defined(code_of(lambda: list(server.stub.ReportRewards(iter(requests), timeout=10))))


@FUZZ
@given(session_id=ids, event_id=ids)
def test_session_and_activate(server: RunningServer, session_id: str, event_id: str) -> None:
    assert_defined(code_of(lambda: server.stub.GetSession(pb.GetSessionRequest(session_id=session_id), timeout=10)))
    assert_defined(
        code_of(lambda: server.stub.DeleteSession(pb.DeleteSessionRequest(session_id=session_id), timeout=10))
    )
    assert_defined(code_of(lambda: server.stub.Activate(pb.ActivateRequest(event_id=event_id), timeout=10)))


#: A DecideRequest whose session_id (field 1, length-delimited) is not UTF-8.
INVALID_UTF8 = b"\x0a\x02\xff\xfe\x12\x0bhome_layout"


@FUZZ
@given(data=st.one_of(st.binary(max_size=300), st.just(INVALID_UTF8), st.just(b"\x0a\xff\xff\xff\xff\x0f")))
def test_raw_bytes_on_every_method(server: RunningServer, data: bytes) -> None:
    """Bytes that may not be the request message at all: gRPC's own decoder must never answer for us."""
    for method in ("Decide", "GetSession", "DeleteSession", "Activate"):
        call = server.channel.unary_unary(SERVICE + method, None, None)
        assert_defined(code_of(lambda: call(data, timeout=10)))  # noqa: B023  # called at once
    track = server.channel.stream_unary(SERVICE + "TrackEvents", None, None)
    assert_defined(code_of(lambda: track(iter([data]), timeout=10)))
    report = server.channel.stream_stream(SERVICE + "ReportRewards", None, None)
    assert_defined(code_of(lambda: list(report(iter([data]), timeout=10))))


def test_invalid_utf8_is_invalid_argument_naming_the_message(server: RunningServer) -> None:
    code, details = code_of(
        lambda: server.channel.unary_unary(SERVICE + "Decide", None, None)(INVALID_UTF8, timeout=10)
    )
    assert code == C.INVALID_ARGUMENT
    assert "tailor.v1.DecideRequest" in details
    assert server.metric("tailor_rpcs_rejected_total", {"reason": "undecodable"}) >= 1


def test_the_server_stays_healthy_and_serving(server: RunningServer) -> None:
    health = health_pb2_grpc.HealthStub(server.channel)
    assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == health_pb2.HealthCheckResponse.SERVING
    assert server.client.decide("after-the-storm", "home_layout").action_id in LAYOUTS
    assert server.metric("tailor_rpc_errors_total", {"method": "Decide", "code": "INTERNAL"}) == 0

    # What the fuzzed decisions left (request-supplied actions, hostile features) is learned and logged cleanly.
    def logged() -> float:
        return sum(
            server.metric("tailor_decision_log_lines_total", {"decision_point": point, "outcome": outcome})
            for point in ("home_layout", "apprentice")
            for outcome in ("reward", "default", "unactivated")
        )

    assert server.wait_for(lambda: logged() > 0, timeout=10)
    assert server.metric("tailor_decision_log_errors_total") == 0


def test_refused_input_leaves_a_trained_model_unchanged(
    start_server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    catalogs = tmp_path / "catalogs"
    catalogs.mkdir()
    write_catalog(catalogs, "home_layout", LAYOUTS, reward_window_seconds=0.3)
    trained = start_server(catalogs)
    issued = []
    for i in range(150):  # clean traffic: mobile shoppers like carousel
        d = trained.client.decide(f"clean-{i}", "home_layout", context={"device": "mobile"})
        trained.client.report_rewards([(d.event_id, 1.0 if d.action_id == "carousel" else 0.0, f"r{i}")])
        issued.append(d.event_id)

    def learned() -> float:
        return trained.metric("tailor_learned_examples_total", {"decision_point": "home_layout", "source": "reward"})

    assert trained.wait_for(lambda: learned() == 150, timeout=10)

    def scores() -> list[float]:
        model = trained.app.models.get("home_layout")
        assert model is not None
        return model.policy.predict("shared |c device=mobile", ["|a id=grid", "|a id=carousel", "|a id=editorial"])

    before = trained.call(scores)
    # Refused input only: rewards that are not numbers, or for decisions already learned; decisions for an
    # unknown decision point; undecodable bytes; events of unknown types.
    refused = [pb.Reward(event_id=e, value=v, reward_id="x") for e in issued[:20] for v in (math.nan, math.inf)]
    refused += [pb.Reward(event_id=e, value=1.0, reward_id="late") for e in issued[:20]]
    answers = trained.stub.ReportRewards(iter([pb.ReportRewardsRequest(rewards=refused)]), timeout=10)
    statuses = [r.status for answer in answers for r in answer.results]
    assert set(statuses) <= {pb.REWARD_STATUS_INVALID, pb.REWARD_STATUS_LATE, pb.REWARD_STATUS_UNKNOWN_EVENT}
    for junk in (INVALID_UTF8, b"\xff" * 40):
        code_of(lambda: trained.channel.unary_unary(SERVICE + "Decide", None, None)(junk, timeout=5))  # noqa: B023
    code_of(lambda: trained.stub.Decide(pb.DecideRequest(session_id="x", decision_point="nope"), timeout=5))
    trained.stub.TrackEvents(
        iter([pb.TrackEventsRequest(events=[pb.SessionEvent(session_id="x", type=pb.EventType.ValueType(99))])])
    )
    time.sleep(0.8)  # past the reward window: anything wrongly retained would be learned by now
    assert learned() == 150
    assert trained.call(scores) == before


def test_numbers_too_large_for_vw_are_refused_naming_the_field(server: RunningServer) -> None:
    """VW learns in float32 and crosses features: 1e300 in a context reached VW as NaN scores (INTERNAL)
    before the bound; now it is INVALID_ARGUMENT naming the feature, and the bound itself is served."""
    huge = pb.DecideRequest(
        session_id="big", decision_point="home_layout", context={"price": pb.FeatureValue(number=1e300)}
    )
    code, details = code_of(lambda: server.stub.Decide(huge, timeout=10))
    assert code == C.INVALID_ARGUMENT and "context[price]" in details and "±1e+06" in details
    edge = pb.DecideRequest(
        session_id="big", decision_point="home_layout", context={"price": pb.FeatureValue(number=1e6)}
    )
    assert code_of(lambda: server.stub.Decide(edge, timeout=10))[0] == C.OK


def test_a_model_gone_non_finite_still_answers_uniformly() -> None:
    """The fuse behind the bound: if VW's scores ever overflow, Decide draws uniformly instead of failing."""
    from policies import LearningSpec, VWPolicy

    policy = VWPolicy(LearningSpec())
    policy.learn("shared |c x:1e30", ["|a id=a", "|a id=b"], 0, -1.0, 0.5)  # what the bound now refuses
    assert policy.predict("shared |c x:1", ["|a id=a", "|a id=b"]) == [0.5, 0.5]
    policy.close()


# --- AdminService --------------------------------------------------------------------------------------

ADMIN = "/tailor.v1.AdminService/"
#: A concurrent change (a stale expected_version) is ABORTED: defined, and what optimistic concurrency says.
ADMIN_DEFINED = DEFINED | {C.ABORTED}
CATALOG_KEYS = ["decision_point", "description", "policy", "actions", "id", "features", "payload",
                "learning", "exploration", "reward_range", "reward_window_seconds", "interactions", "bits",
                "mode", "apprentice_exploration", "holdout_share", "baseline_action"]  # fmt: skip
json_scalars = st.one_of(st.none(), st.booleans(), numbers, texts)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.one_of(st.sampled_from(CATALOG_KEYS), texts), inner, max_size=4)
    ),
    max_leaves=20,
)


@st.composite
def catalogs(draw: st.DrawFn) -> dict[str, Any]:
    """Catalog-shaped documents: mostly the right keys with hostile values, sometimes almost valid."""
    doc: dict[str, Any] = draw(st.dictionaries(st.sampled_from(CATALOG_KEYS), json_values, max_size=5))
    if draw(st.booleans()):
        doc["decision_point"] = draw(st.one_of(st.sampled_from(["home_layout", "offers"]), texts))
        doc["actions"] = draw(st.lists(st.fixed_dictionaries({"id": ids}), max_size=3))
        if draw(st.booleans()):  # apprentice and holdout settings, valid or hostile
            doc["policy"] = {
                "mode": draw(st.one_of(st.sampled_from(["learn", "apprentice"]), json_scalars)),
                "apprentice_exploration": draw(st.one_of(st.floats(0, 1), json_scalars)),
                "holdout_share": draw(st.one_of(st.floats(0, 0.5), json_scalars)),
            }
    return doc


@pytest.fixture(scope="module", params=["embedded", "redis"])
def admin_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server of its own: fuzzed changes may really replace or delete its catalogs. Both backends: embedded,
    and a Redis-mode replica with a learner (which applies the model commands)."""
    root = tmp_path_factory.mktemp("hostile-admin")
    catalogs_dir = root / "catalogs"
    catalogs_dir.mkdir()
    write_catalog(catalogs_dir, "home_layout", LAYOUTS)
    config = ServeConfig(
        catalogs=catalogs_dir, host="127.0.0.1", port=0, metrics_port=None, console_port=0, data_dir=root / "data"
    )
    if request.param == "embedded":
        running = RunningServer(config)
        yield running
        running.stop()
        return
    redis_server: RedisServer = request.getfixturevalue("module_redis")
    prefix = f"fuzz{uuid.uuid4().hex[:6]}"
    learner = RunningLearner(
        LearnConfig(catalogs=catalogs_dir, redis_url=redis_server.url, redis_prefix=prefix, metrics_port=None)
    )
    running = RunningServer(config.model_copy(update={"redis_url": redis_server.url, "redis_prefix": prefix}))
    yield running
    running.stop()
    learner.stop()


def assert_admin_defined(outcome: tuple[grpc.StatusCode, str]) -> None:
    code, details = outcome
    assert code in ADMIN_DEFINED, (code, details[:200])
    assert "Traceback" not in details and 'File "' not in details


@FUZZ
@given(document=catalogs(), expected=st.one_of(st.none(), st.integers(-5, 5)), validate_only=st.booleans())
def test_admin_put(
    admin_server: RunningServer, document: dict[str, Any], expected: int | None, validate_only: bool
) -> None:
    admin = apb_grpc.AdminServiceStub(admin_server.channel)
    request = apb.PutDecisionPointRequest(validate_only=validate_only)
    try:
        request.catalog.update(document)
    except (ValueError, TypeError):  # protobuf refuses it (NaN keys and the like): nothing to send
        return
    if expected is not None:
        request.expected_version = expected
    assert_admin_defined(code_of(lambda: admin.PutDecisionPoint(request, timeout=10)))


@FUZZ
@given(name=st.one_of(st.just("home_layout"), ids), version=st.integers(-3, 10), expected=st.integers(-1, 10))
def test_admin_reads_rollback_delete_and_models(
    admin_server: RunningServer, name: str, version: int, expected: int
) -> None:
    admin = apb_grpc.AdminServiceStub(admin_server.channel)
    calls: list[Callable[[], Any]] = [
        lambda: admin.ListDecisionPoints(apb.ListDecisionPointsRequest(), timeout=10),
        lambda: admin.GetDecisionPoint(apb.GetDecisionPointRequest(decision_point=name, version=version), timeout=10),
        lambda: admin.ListCatalogVersions(apb.ListCatalogVersionsRequest(decision_point=name), timeout=10),
        lambda: admin.ListAuditEvents(apb.ListAuditEventsRequest(decision_point=name, page_size=version), timeout=10),
        lambda: admin.RollbackDecisionPoint(
            apb.RollbackDecisionPointRequest(decision_point=name, to_version=version, expected_version=expected),
            timeout=10,
        ),
        lambda: list(admin.ExportModel(apb.ExportModelRequest(decision_point=name), timeout=10)),
        lambda: admin.ImportModel(iter([apb.ImportModelRequest(decision_point=name, data=name.encode())]), timeout=10),
        lambda: admin.ResetModel(apb.ResetModelRequest(decision_point=name), timeout=10),
        lambda: admin.DeleteDecisionPoint(
            apb.DeleteDecisionPointRequest(decision_point=name, expected_version=expected), timeout=10
        ),
    ]
    for call in calls:
        assert_admin_defined(code_of(call))


@FUZZ
@given(data=st.one_of(st.binary(max_size=300), st.just(INVALID_UTF8)))
def test_raw_bytes_on_every_admin_method(admin_server: RunningServer, data: bytes) -> None:
    for method in ("ListDecisionPoints", "GetDecisionPoint", "PutDecisionPoint", "DeleteDecisionPoint",
                   "ListCatalogVersions", "RollbackDecisionPoint", "ResetModel", "ListAuditEvents"):  # fmt: skip
        call = admin_server.channel.unary_unary(ADMIN + method, None, None)
        assert_admin_defined(code_of(lambda: call(data, timeout=10)))  # noqa: B023  # called at once
    export = admin_server.channel.unary_stream(ADMIN + "ExportModel", None, None)
    assert_admin_defined(code_of(lambda: list(export(data, timeout=10))))
    import_ = admin_server.channel.stream_unary(ADMIN + "ImportModel", None, None)
    assert_admin_defined(code_of(lambda: import_(iter([data]), timeout=10)))
