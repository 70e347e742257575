"""Per-action schedules and pause: Decide considers only actions active now; no restart for a change."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from server.catalogs import CatalogError, load_catalog_dir

from ..conftest import RunningServer


def stamp(seconds_from_now: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds_from_now)).astimezone().isoformat()


def write(folder: Path, actions: list[dict[str, Any]]) -> None:
    doc = {"decision_point": "offers", "actions": actions}
    (folder / "offers.yaml").write_text(yaml.safe_dump(doc))


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    out = tmp_path / "catalogs"
    out.mkdir()
    return out


def picks(server: RunningServer, n: int = 40, **kwargs: Any) -> set[str]:
    return {server.client.decide(f"s{i}", "offers", **kwargs).action_id for i in range(n)}


def test_only_active_actions_are_served_and_a_window_opens_and_closes_by_itself(
    start_any: Callable[..., RunningServer], folder: Path
) -> None:
    written = time.monotonic()  # the window opens 3 s from now: a Redis-mode start (replica, learner) fits before
    write(
        folder,
        [
            {"id": "always"},
            {"id": "paused", "paused": True},
            {"id": "over", "active_until": stamp(-60)},
            {"id": "soon", "active_from": stamp(3.0), "active_until": stamp(4.5)},
        ],
    )
    server = start_any(folder)
    assert time.monotonic() - written < 2.5, "the server took too long to start for this test's window"
    assert picks(server) == {"always"}
    # named candidates that are inactive are dropped; only when none remains is it FAILED_PRECONDITION
    assert picks(server, candidate_action_ids=["paused", "always"]) == {"always"}
    with pytest.raises(grpc.RpcError) as err:
        server.client.decide("s", "offers", candidate_action_ids=["paused", "over"])
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "paused" in str(err.value.details())
    with pytest.raises(grpc.RpcError) as unknown:  # an id the catalog lacks is still a client error
        server.client.decide("s", "offers", candidate_action_ids=["nope"])
    assert unknown.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    time.sleep(max(0.0, written + 3.2 - time.monotonic()))
    assert picks(server, 60) == {"always", "soon"}  # the window opened, no reload
    time.sleep(max(0.0, written + 4.7 - time.monotonic()))
    assert picks(server) == {"always"}  # and closed


def test_schedules_need_an_offset_and_an_order(folder: Path) -> None:
    write(folder, [{"id": "a", "active_from": "2026-12-24T00:00:00"}])
    with pytest.raises(CatalogError) as naive:
        load_catalog_dir(folder)
    assert "actions.0.active_from" in naive.value.problems[0] and "timezone" in naive.value.problems[0]
    write(folder, [{"id": "a", "active_from": "2026-12-24T00:00:00+01:00", "active_until": "2026-12-23T00:00:00Z"}])
    with pytest.raises(CatalogError) as backwards:
        load_catalog_dir(folder)
    assert "must be before active_until" in backwards.value.problems[0]
