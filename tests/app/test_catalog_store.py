"""The embedded server serves the catalog store: the directory seeds it, a changed file becomes a new version
on reload (SIGHUP, or found by the periodic check of the files), and a restart keeps the versions without
making new ones."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..conftest import LAYOUTS, RunningServer, write_catalog


def versions(server: RunningServer) -> dict[str, int]:
    return {name: v.version for name, v in server.run(server.app.catalog_store.current()).items()}


def test_reload_makes_a_version_and_a_restart_keeps_it(
    start_server: Callable[..., RunningServer], catalog_dir: Path
) -> None:
    server = start_server(catalog_dir)
    assert versions(server) == {"home_layout": 1}
    assert server.run(server.app.reload_catalogs())
    assert versions(server) == {"home_layout": 1}  # unchanged file: no new version
    write_catalog(catalog_dir, "home_layout", {**LAYOUTS, "deals": {"style": "deals"}}, reward_window_seconds=60)
    assert server.run(server.app.reload_catalogs())
    assert versions(server) == {"home_layout": 2}
    served = {server.client.decide(f"s{i}", "home_layout", candidate_action_ids=["deals"]).action_id for i in range(3)}
    assert served == {"deals"}
    [event] = server.run(server.app.catalog_store.audit(1))
    assert event.version == 2 and "+- id: deals" in event.diff
    server.stop()

    again = start_server(catalog_dir)  # same data directory
    assert versions(again) == {"home_layout": 2}
    assert again.metric("tailor_corrupt_state_total", {"what": "catalog"}) == 0
    assert again.client.decide("s", "home_layout", candidate_action_ids=["deals"]).action_id == "deals"


def test_a_changed_file_is_applied_without_a_signal_and_a_broken_one_changes_nothing(
    start_server: Callable[..., RunningServer], catalog_dir: Path
) -> None:
    server = start_server(catalog_dir, catalog_poll_seconds=0.1)  # a ConfigMap update, as the kubelet makes it
    write_catalog(catalog_dir, "home_layout", {**LAYOUTS, "deals": {"style": "deals"}}, reward_window_seconds=60)
    assert server.wait_for(lambda: "deals" in server.app.service.catalogs["home_layout"].action_ids)
    assert versions(server) == {"home_layout": 2}
    (catalog_dir / "home_layout.yaml").write_text("decision_point: home_layout\nactions: [\n")  # torn
    assert server.wait_for(lambda: server.metric("tailor_catalog_reloads_total", {"result": "error"}) == 1)
    assert versions(server) == {"home_layout": 2}  # still served
    assert server.client.decide("s", "home_layout", candidate_action_ids=["deals"]).action_id == "deals"
