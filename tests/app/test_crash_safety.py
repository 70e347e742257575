"""Crash safety: torn or corrupt files in the data directory are detected at start, never loaded, never a
failed start; the previous good snapshot is used and a metric and a log line say so."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from server.state.decision_log._memory import PENDING_FORMAT
from tailor.v1 import decision_service_pb2 as pb

from ..conftest import LAYOUTS, RunningServer, write_catalog


@pytest.fixture
def catalogs(tmp_path: Path) -> Path:
    folder = tmp_path / "catalogs"
    folder.mkdir()
    write_catalog(folder, "home_layout", LAYOUTS, reward_window_seconds=0.2)
    return folder


def learn_some(server: RunningServer, count: int, prefix: str) -> None:
    before = server.metric("tailor_learned_examples_total", {"decision_point": "home_layout", "source": "reward"})
    for i in range(count):
        d = server.client.decide(f"{prefix}-{i}", "home_layout", context={"device": "mobile"})
        server.client.report_rewards([(d.event_id, 1.0 if d.action_id == "carousel" else 0.0, "r")])
    assert server.wait_for(
        lambda: (
            server.metric("tailor_learned_examples_total", {"decision_point": "home_layout", "source": "reward"})
            == before + count
        ),
        timeout=10,
    )


def snapshots(data: Path) -> list[Path]:
    return sorted((data / "models" / "home_layout").glob("*/*.vw"))


def test_a_corrupt_newest_snapshot_is_set_aside_and_the_one_before_is_used(
    start_server: Callable[..., RunningServer], catalogs: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = start_server(catalogs)
    learn_some(first, 50, "a")
    assert first.call(first.app.snapshot_changed) == 1
    learn_some(first, 50, "b")
    first.stop()  # the graceful stop writes snapshot 2
    data = tmp_path / "data"
    one, two = snapshots(data)
    manifest = json.loads(two.with_suffix(".json").read_text())
    assert manifest["format"] == 2 and manifest["model_bytes"] == two.stat().st_size
    assert set(manifest["actions"]["counts"]) == set(LAYOUTS)

    raw = bytearray(two.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # one flipped byte: VW might even load it, the checksum does not
    two.write_bytes(bytes(raw))
    caplog.set_level(logging.ERROR, logger="tailor.snapshots")
    second = start_server(catalogs)
    model = second.app.models.get("home_layout")
    assert model is not None and model.seq == 1
    assert second.client.decide("after", "home_layout").model_version.endswith(".1")
    assert second.metric("tailor_corrupt_state_total", {"what": "snapshot"}) == 1
    assert any("corrupt" in r.getMessage() and str(two) in r.getMessage() for r in caplog.records)
    assert not two.exists() and two.with_name(two.name + ".corrupt").exists()  # kept for inspection
    learn_some(second, 10, "c")  # and learning goes on from snapshot 1
    second.stop()
    assert [p.name for p in snapshots(data)] == [one.name, "0000000002.vw"]


def test_a_truncated_snapshot_is_detected(
    start_server: Callable[..., RunningServer], catalogs: Path, tmp_path: Path
) -> None:
    first = start_server(catalogs)
    learn_some(first, 30, "a")
    first.stop()
    (only,) = snapshots(tmp_path / "data")
    only.write_bytes(only.read_bytes()[:100])  # torn
    second = start_server(catalogs)
    model = second.app.models.get("home_layout")
    assert model is not None and model.seq == 0  # nothing good left: a fresh model, serving
    assert second.client.decide("s", "home_layout").action_id in LAYOUTS
    assert second.metric("tailor_corrupt_state_total", {"what": "snapshot"}) == 1


def test_an_unverifiable_snapshot_vw_cannot_load_is_set_aside(
    start_server: Callable[..., RunningServer], catalogs: Path, tmp_path: Path
) -> None:
    """Snapshots of 0.1 carry no checksum: if VW cannot read one, it is set aside like a corrupt one."""
    first = start_server(catalogs)
    learn_some(first, 30, "a")
    first.stop()
    (only,) = snapshots(tmp_path / "data")
    only.with_suffix(".json").unlink()  # as 0.1 wrote it: the model file alone
    only.write_bytes(b"this is not a VW model")
    second = start_server(catalogs)
    assert second.client.decide("s", "home_layout").action_id in LAYOUTS
    assert second.metric("tailor_corrupt_state_total", {"what": "snapshot"}) == 1


def test_retained_decisions_carry_a_format_and_checksums_and_a_corrupt_line_is_skipped(
    start_server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    folder = tmp_path / "catalogs"
    folder.mkdir()
    write_catalog(folder, "home_layout", LAYOUTS, reward_window_seconds=600)
    first = start_server(folder)
    issued = [first.client.decide(f"s{i}", "home_layout").event_id for i in range(10)]
    first.stop()
    pending = tmp_path / "data" / "pending-decisions.jsonl"
    header, *lines = pending.read_text().splitlines()
    assert json.loads(header) == {"format": PENDING_FORMAT, "kind": "tailor-pending-decisions"}
    assert len(lines) == 10
    lines[3] = lines[3].replace('"home_layout"', '"home_layouX"')  # bit rot: the checksum no longer matches
    lines[7] = lines[7][: len(lines[7]) // 2]  # torn
    pending.write_text("\n".join([header, *lines]) + "\n")

    second = start_server(folder)
    assert second.metric("tailor_pending_decisions_restored_total") == 8
    assert second.metric("tailor_corrupt_state_total", {"what": "pending_decision"}) == 2
    results = second.client.report_rewards([(e, 1.0, "r") for e in issued])
    statuses = [r.status for r in results]
    assert statuses.count(pb.REWARD_STATUS_ACCEPTED) == 8  # the intact decisions are back
