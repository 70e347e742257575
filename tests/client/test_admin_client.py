"""TailorClient's AdminService methods against a real server: catalogs with versions, optimistic concurrency,
rollback and deletion; models exported, imported and reset; the audit log under the caller's key name."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from tailor import TailorClient, catalog_dict, catalog_struct
from tailor.v1 import admin_service_pb2 as apb

from ..api import code_of
from ..api.test_keys import write_keys
from ..conftest import RunningServer

C = grpc.StatusCode


def serves(client: TailorClient, action: str) -> bool:
    """Whether the served catalog of home_layout has `action` (Decide narrowed to it)."""
    try:
        return client.decide("probe", "home_layout", candidate_action_ids=[action]).action_id == action
    except grpc.RpcError as err:
        assert err.code() in (C.INVALID_ARGUMENT, C.FAILED_PRECONDITION)  # not a candidate of the served catalog
        return False


def with_action(document: dict[str, Any], action: str) -> dict[str, Any]:
    return {**document, "actions": [*document["actions"], {"id": action, "features": {"style": action}}]}


@pytest.fixture
def server(start_any: Callable[..., RunningServer], catalog_dir: Path) -> RunningServer:
    """Both backends: embedded, and a Redis-mode replica with a learner."""
    return start_any(catalog_dir)


def test_catalogs_are_read_changed_rolled_back_and_deleted(server: RunningServer) -> None:
    client = server.client
    [row] = client.list_decision_points()
    assert (row.decision_point, row.current.version, sorted(row.action_ids)) == (
        "home_layout",
        1,
        ["carousel", "editorial", "grid"],
    )
    got = client.get_decision_point("home_layout")
    v1 = catalog_dict(got.catalog)
    assert got.info.version == 1 and v1["decision_point"] == "home_layout" and "carousel" in got.yaml

    preview = client.put_decision_point(with_action(v1, "deals"), expected_version=1, validate_only=True)
    assert preview.changed and preview.info.version == 2 and "id: deals" in preview.diff
    assert preview.model_effect == apb.MODEL_EFFECT_KEPT
    assert not serves(client, "deals") and len(client.list_catalog_versions("home_layout")) == 1

    done = client.put_decision_point(with_action(v1, "deals"), expected_version=1)
    assert done.changed and done.info.version == 2 and serves(client, "deals")
    same = client.put_decision_point(with_action(v1, "deals"))
    assert not same.changed and same.info.version == 2  # no new version for the same catalog

    stale = code_of(lambda: client.put_decision_point(with_action(v1, "banner"), expected_version=1))
    assert stale == C.ABORTED and not serves(client, "banner")

    back = client.rollback_decision_point("home_layout", 1, expected_version=2)
    assert back.changed and back.info.version == 3 and back.info.origin == apb.CATALOG_ORIGIN_ROLLBACK
    assert not serves(client, "deals")
    assert catalog_dict(client.get_decision_point("home_layout", version=2).catalog)["actions"][-1]["id"] == "deals"
    assert [v.version for v in client.list_catalog_versions("home_layout")] == [3, 2, 1]

    gone = client.delete_decision_point("home_layout", expected_version=3)
    assert gone.deleted and gone.version == 4
    assert code_of(lambda: client.get_decision_point("home_layout")) == C.NOT_FOUND
    assert client.list_decision_points() == []
    assert [e.action for e in client.list_audit_events("home_layout")] == ["delete", "rollback", "update", "create"]
    assert len(client.list_audit_events(page_size=2)) == 2


def test_a_catalog_travels_only_as_json(server: RunningServer) -> None:
    """A value JSON cannot hold is refused before the call, naming where it is; numbers become doubles."""
    doc = {"decision_point": "x", "actions": [{"id": "a", "features": {"launch": datetime.date(2024, 5, 1)}}]}
    with pytest.raises(ValueError, match=r"catalog\.actions\[0\]\.features\.launch: a date .* quote it"):
        server.client.put_decision_point(doc)
    with pytest.raises(ValueError, match=r"catalog\.policy: key 1 is not a string"):
        catalog_struct({"decision_point": "x", "policy": {1: 2}})
    with pytest.raises(ValueError, match="not a finite number"):
        catalog_struct({"decision_point": "x", "policy": {"reward_window_seconds": float("nan")}})
    assert catalog_dict(catalog_struct({"a": [1, True, None, "s"]})) == {"a": [1.0, True, None, "s"]}
    at = datetime.datetime(2026, 12, 20, tzinfo=datetime.timezone(datetime.timedelta(hours=1)))
    assert catalog_dict(catalog_struct({"active_from": at})) == {"active_from": "2026-12-20T00:00:00+01:00"}


def _pmf(client: TailorClient, tag: str) -> dict[str, float]:
    d = client.decide(f"probe-{tag}", "home_layout")
    return {r.action_id: round(r.probability, 6) for r in d.ranking}


def test_models_export_import_and_reset(start_server: Callable[..., RunningServer], catalog_dir: Path) -> None:
    server = start_server(catalog_dir)  # embedded (tests/api/test_admin.py runs the model commands in both)
    client = server.client
    for i in range(30):  # teach it that carousel wins
        d = client.decide(f"m{i}", "home_layout")
        client.report_rewards([(d.event_id, 1.0 if d.action_id == "carousel" else 0.0, f"r{i}")])
    learned_total = ("tailor_learned_examples_total", {"decision_point": "home_layout", "source": "reward"})
    assert server.wait_for(lambda: server.metric(*learned_total) == 30)
    learned = _pmf(client, "learned")
    assert max(learned, key=learned.__getitem__) == "carousel"

    exported_version, model = client.export_model("home_layout")
    fingerprint = exported_version.split(".")[0]
    assert model and exported_version == client.list_decision_points()[0].model_version

    reset = client.reset_model("home_layout")
    assert reset != exported_version and reset.split(".")[0] == fingerprint
    assert len(set(_pmf(client, "reset").values())) == 1  # a fresh model explores uniformly

    imported = client.import_model("home_layout", model, chunk=1000)  # several messages
    assert imported.split(".")[0] == fingerprint and imported not in (exported_version, reset)
    assert _pmf(client, "imported") == learned  # the exported weights are served again
    assert code_of(lambda: client.import_model("home_layout", b"not a model")) == C.FAILED_PRECONDITION
    assert [e.action for e in client.list_audit_events()][:2] == ["import_model", "reset_model"]


def test_roles_and_the_audit_log_name_the_key(
    start_server: Callable[..., RunningServer], catalog_dir: Path, tmp_path: Path
) -> None:
    key_file = tmp_path / "keys.yaml"
    write_keys(key_file, {"ops": ["admin"], "analyst": ["observe"]})
    server = start_server(catalog_dir, api_keys=key_file)
    ops = TailorClient("", channel=server.channel, api_key="key-of-ops")
    analyst = TailorClient("", channel=server.channel, api_key="key-of-analyst")
    v1 = catalog_dict(analyst.get_decision_point("home_layout").catalog)  # reads need observe
    assert code_of(lambda: analyst.put_decision_point(with_action(v1, "deals"))) == C.PERMISSION_DENIED
    assert code_of(lambda: analyst.export_model("home_layout")) == C.PERMISSION_DENIED
    assert code_of(lambda: server.client.list_decision_points()) == C.UNAUTHENTICATED  # no key

    assert ops.put_decision_point(with_action(v1, "deals"), expected_version=1).info.actor == "ops"
    ops.reset_model("home_layout")
    events = analyst.list_audit_events("home_layout")
    assert [(e.action, e.actor) for e in events] == [
        ("reset_model", "ops"),
        ("update", "ops"),
        ("create", "catalog-directory"),
    ]
    assert "deals" in events[1].diff and "key-of-ops" not in str(events)
    assert [v.actor for v in analyst.list_catalog_versions("home_layout")] == ["ops", "catalog-directory"]
