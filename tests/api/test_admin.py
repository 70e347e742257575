"""AdminService through a real server, in both backends (embedded; a Redis-mode replica with `tailor learn`'s
learner on a private redis-server): catalog changes served at once, versions, optimistic concurrency,
rollback, deletion and re-creation, model export/import/reset, the audit log, and the roles."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format, struct_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from tailor.v1 import admin_service_pb2 as apb
from tailor.v1 import admin_service_pb2_grpc as apb_grpc
from tailor.v1 import decision_service_pb2 as pb

from ..conftest import LAYOUTS, RunningServer
from ..redis_server import sync_client
from . import code_of
from .test_keys import write_keys

Admin = apb_grpc.AdminServiceStub


def struct(doc: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(doc)
    return out


def layouts(*extra: str, window: float = 60) -> dict[str, Any]:
    actions = [{"id": a, "features": f} for a, f in LAYOUTS.items()] + [{"id": a} for a in extra]
    return {"decision_point": "home_layout", "policy": {"reward_window_seconds": window}, "actions": actions}


@pytest.fixture
def server(start_any: Callable[..., RunningServer], catalog_dir: Path) -> RunningServer:
    """The server AdminService is called on: embedded, or a Redis-mode replica with a leading learner."""
    return start_any(catalog_dir)


@pytest.fixture
def admin(server: RunningServer) -> Admin:
    return apb_grpc.AdminServiceStub(server.channel)


def redis_mode(server: RunningServer) -> bool:
    return server.app.redis is not None


def served_version(server: RunningServer) -> str:
    model = server.app.models.get("home_layout")
    assert model is not None
    return model.version


def eventually(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll a predicate from the test's thread (one that calls the server cannot run on its loop)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def serving(server: RunningServer, version: str) -> bool:
    """Wait until the server serves this model version (at once embedded; a Redis replica follows a publish)."""
    return server.wait_for(lambda: served_version(server) == version, timeout=10)


def serves(server: RunningServer, action: str) -> bool:
    try:
        return server.client.decide("s", "home_layout", candidate_action_ids=[action]).action_id == action
    except grpc.RpcError as err:
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT  # not a candidate of the served catalog
        return False


def test_a_put_is_validated_previewed_and_served_at_once(server: RunningServer, admin: Admin) -> None:
    [row] = admin.ListDecisionPoints(apb.ListDecisionPointsRequest()).decision_points
    assert (row.decision_point, row.current.version, row.current.origin) == (
        "home_layout",
        1,
        apb.CATALOG_ORIGIN_DIRECTORY,
    )
    preview = admin.PutDecisionPoint(
        apb.PutDecisionPointRequest(catalog=struct(layouts("deals")), expected_version=1, validate_only=True)
    )
    assert preview.changed and preview.info.version == 2 and "+- id: deals" in preview.diff
    assert preview.model_effect == apb.MODEL_EFFECT_KEPT
    assert not serves(server, "deals")  # validate_only changed nothing
    done = admin.PutDecisionPoint(apb.PutDecisionPointRequest(catalog=struct(layouts("deals")), expected_version=1))
    assert done.changed and done.info.version == 2 and done.info.actor == "local"
    assert serves(server, "deals")
    again = admin.PutDecisionPoint(apb.PutDecisionPointRequest(catalog=struct(layouts("deals"))))
    assert not again.changed and again.info.version == 2  # same content: no new version
    got = admin.GetDecisionPoint(apb.GetDecisionPointRequest(decision_point="home_layout"))
    assert json_format.MessageToDict(got.catalog)["actions"][-1] == {"id": "deals"} and "deals" in got.yaml


def test_a_stale_expected_version_is_aborted_and_changes_nothing(server: RunningServer, admin: Admin) -> None:
    admin.PutDecisionPoint(apb.PutDecisionPointRequest(catalog=struct(layouts("deals")), expected_version=1))
    stale = apb.PutDecisionPointRequest(catalog=struct(layouts("banner")), expected_version=1)
    with pytest.raises(grpc.RpcError) as err:
        admin.PutDecisionPoint(stale)
    assert err.value.code() == grpc.StatusCode.ABORTED
    assert "is at version 2, not 1" in str(err.value.details())
    assert not serves(server, "banner")


def test_an_invalid_catalog_names_the_field_as_the_loader_does(admin: Admin) -> None:
    bad = layouts()
    bad["policy"] = {"reward_window_seconds": -5}
    with pytest.raises(grpc.RpcError) as err:
        admin.PutDecisionPoint(apb.PutDecisionPointRequest(catalog=struct(bad)))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(err.value)  # type: ignore[arg-type]  # a failed blocking call is a grpc.Call
    assert status is not None
    request = error_details_pb2.BadRequest()
    status.details[0].Unpack(request)
    [violation] = request.field_violations
    assert violation.field == "catalog.policy.reward_window_seconds"
    assert "greater than 0" in violation.description


def test_rollback_delete_and_recreate(server: RunningServer, admin: Admin) -> None:
    admin.PutDecisionPoint(apb.PutDecisionPointRequest(catalog=struct(layouts("deals"))))
    back = admin.RollbackDecisionPoint(apb.RollbackDecisionPointRequest(decision_point="home_layout", to_version=1))
    assert back.changed and back.info.version == 3 and back.info.origin == apb.CATALOG_ORIGIN_ROLLBACK
    assert "-- id: deals" in back.diff and not serves(server, "deals")
    gone = admin.DeleteDecisionPoint(apb.DeleteDecisionPointRequest(decision_point="home_layout", expected_version=3))
    assert gone.info.deleted and gone.info.version == 4
    assert code_of(lambda: server.client.decide("s", "home_layout")) == grpc.StatusCode.NOT_FOUND
    again = admin.RollbackDecisionPoint(
        apb.RollbackDecisionPointRequest(decision_point="home_layout", to_version=2, expected_version=0)
    )
    assert again.info.version == 5 and serves(server, "deals")
    versions = admin.ListCatalogVersions(apb.ListCatalogVersionsRequest(decision_point="home_layout")).versions
    assert [(v.version, v.deleted) for v in versions] == [(5, False), (4, True), (3, False), (2, False), (1, False)]
    events = admin.ListAuditEvents(apb.ListAuditEventsRequest(decision_point="home_layout")).events
    assert [e.action for e in events] == ["rollback", "delete", "rollback", "update", "create"]
    missing = apb.RollbackDecisionPointRequest(decision_point="home_layout", to_version=4)  # the deletion
    assert code_of(lambda: admin.RollbackDecisionPoint(missing)) == grpc.StatusCode.NOT_FOUND


def train(server: RunningServer, rounds: int) -> None:
    """Rewarded decisions where carousel wins, all learned and served (embedded: not yet snapshotted; Redis
    mode: published by the learner and followed by the replica)."""
    before = served_version(server)
    for i in range(rounds):
        d = server.client.decide(f"train{i}", "home_layout")
        server.client.report_rewards([(d.event_id, 1.0 if d.action_id == "carousel" else 0.0, f"train{i}")])
    model = server.app.models.get("home_layout")
    assert model is not None
    if not redis_mode(server):
        assert server.wait_for(lambda: model.learned_since_snapshot == rounds)
        return

    raw = sync_client(server.config.redis_url or "", server.config.redis_cluster)
    tag = f"{server.config.redis_prefix}:{{m}}"

    def learned_and_followed() -> bool:
        """Every learn-stream entry is covered by the published offsets, and the replica serves that model."""
        last = {k: raw.xinfo_stream(k)["last-generated-id"] for k in raw.scan_iter(f"{tag[:-4]}:*:learn:*")}
        offsets = raw.hgetall(f"{tag}:offsets")
        meta = raw.hget(f"{tag}:models", "home_layout")
        if meta is None or any(offsets.get(k) != v for k, v in last.items()):
            return False
        published = json.loads(meta)
        return served_version(server) == f"{published['fingerprint']}.{published['seq']}" != before

    assert server.wait_for(learned_and_followed, timeout=15)
    raw.close()


def pmf(server: RunningServer, tag: str) -> dict[str, float]:
    """The served model's probabilities for a fresh session (they depend on the model, not on the draw)."""
    d = server.client.decide(f"probe-{tag}", "home_layout")
    return {r.action_id: round(r.probability, 6) for r in d.ranking}


def test_model_export_import_and_reset(server: RunningServer, admin: Admin) -> None:
    train(server, 30)
    learned = pmf(server, "learned")
    assert max(learned, key=learned.__getitem__) == "carousel"
    chunks = list(admin.ExportModel(apb.ExportModelRequest(decision_point="home_layout")))
    exported = b"".join(c.data for c in chunks)
    version = served_version(server)
    assert chunks[0].model_version == version and "--cb_explore_adf" in chunks[0].vw_args and exported
    fingerprint, seq = version.split(".")
    reset = admin.ResetModel(apb.ResetModelRequest(decision_point="home_layout"))
    assert reset.model_version == f"{fingerprint}.{int(seq) + 1}"
    assert serving(server, reset.model_version)
    assert pmf(server, "reset") != learned  # a fresh model
    imported = admin.ImportModel(
        iter([apb.ImportModelRequest(decision_point="home_layout", data=exported[:100]),
              apb.ImportModelRequest(data=exported[100:])])
    )  # fmt: skip
    assert imported.model_version == f"{fingerprint}.{int(seq) + 2}"
    assert serving(server, imported.model_version)
    assert pmf(server, "imported") == learned  # the exported weights are served again
    junk = iter([apb.ImportModelRequest(decision_point="home_layout", data=b"not a model")])
    assert code_of(lambda: admin.ImportModel(junk)) == grpc.StatusCode.FAILED_PRECONDITION
    actions = [e.action for e in admin.ListAuditEvents(apb.ListAuditEventsRequest()).events]
    assert actions[:2] == ["import_model", "reset_model"]


def test_reads_need_observe_and_changes_admin(
    start_server: Callable[..., RunningServer], catalog_dir: Path, tmp_path: Path
) -> None:
    key_file = tmp_path / "keys.yaml"
    write_keys(key_file, {"ops": ["admin"], "analyst": ["observe"], "storefront": ["decide"]})
    secrets = {name: f"key-of-{name}" for name in ("ops", "analyst", "storefront")}
    server = start_server(catalog_dir, api_keys=key_file)
    admin = apb_grpc.AdminServiceStub(server.channel)

    def as_(name: str) -> tuple[tuple[str, str]]:
        return (("authorization", f"Bearer {secrets[name]}"),)

    listing = apb.ListDecisionPointsRequest()
    assert (
        code_of(lambda: admin.ListDecisionPoints(listing, metadata=as_("storefront")))
        == grpc.StatusCode.PERMISSION_DENIED
    )
    assert admin.ListDecisionPoints(listing, metadata=as_("analyst")).decision_points
    put = apb.PutDecisionPointRequest()  # empty: refused before any validation
    assert code_of(lambda: admin.PutDecisionPoint(put, metadata=as_("analyst"))) == grpc.StatusCode.PERMISSION_DENIED
    change = apb.PutDecisionPointRequest(catalog=struct(layouts("deals")))
    assert admin.PutDecisionPoint(change, metadata=as_("ops")).info.actor == "ops"
    [event] = admin.ListAuditEvents(apb.ListAuditEventsRequest(page_size=1), metadata=as_("analyst")).events
    assert event.actor == "ops" and "deals" in event.diff and secrets["ops"] not in str(event)
    decide = pb.DecideRequest(session_id="s", decision_point="home_layout", candidate_action_ids=["deals"])
    assert server.stub.Decide(decide, metadata=as_("storefront")).action_id == "deals"


def test_live_settings_apply_to_new_decisions_and_learning_flags_start_a_new_model(
    server: RunningServer, admin: Admin
) -> None:
    before = server.client.decide("s1", "home_layout")
    shorter = layouts(window=5)
    shorter["policy"]["aggregation"] = "max"
    change = admin.PutDecisionPoint(apb.PutDecisionPointRequest(catalog=struct(shorter)))
    assert change.model_effect == apb.MODEL_EFFECT_KEPT
    after = server.client.decide("s2", "home_layout")
    assert after.model_version == before.model_version  # the same model keeps learning
    old, new = server.record(before.event_id), server.record(after.event_id)
    assert old is not None and new is not None
    assert (old.window_seconds, old.aggregation) == (60, "first")  # made under the settings of its time
    assert (new.window_seconds, new.aggregation) == (5, "max")
    bolder = layouts(window=5)
    bolder["policy"]["exploration"] = {"algorithm": "epsilon_greedy", "epsilon": 0.2}
    preview = admin.PutDecisionPoint(apb.PutDecisionPointRequest(catalog=struct(bolder), validate_only=True))
    assert preview.model_effect == apb.MODEL_EFFECT_NEW_MODEL
    admin.PutDecisionPoint(apb.PutDecisionPointRequest(catalog=struct(bolder)))
    assert server.client.decide("s3", "home_layout").model_version.split(".")[0] != before.model_version.split(".")[0]


def test_a_rollback_across_a_learning_flags_change_brings_the_kept_model_back(
    server: RunningServer, admin: Admin
) -> None:
    train(server, 40)
    learned, version = pmf(server, "learned"), served_version(server)
    other = layouts(window=60)
    other["policy"]["learning"] = {"bits": 16}
    assert admin.PutDecisionPoint(apb.PutDecisionPointRequest(catalog=struct(other))).model_effect == (
        apb.MODEL_EFFECT_NEW_MODEL
    )
    assert pmf(server, "fresh") != learned
    back = admin.RollbackDecisionPoint(apb.RollbackDecisionPointRequest(decision_point="home_layout", to_version=1))
    assert back.model_effect == apb.MODEL_EFFECT_NEW_MODEL  # another model than the one served now: the kept one
    assert server.wait_for(lambda: served_version(server).split(".")[0] == version.split(".")[0], timeout=10)
    assert eventually(lambda: pmf(server, "back") == learned)
