"""The embedded server serves the catalog store: the directory seeds it, a changed file becomes a new version
on reload, and a restart keeps the versions without making new ones."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..conftest import LAYOUTS, RunningServer, write_catalog


def versions(server: RunningServer) -> dict[str, int]:
    store = server.app.catalog_store
    assert store is not None
    return server.call(lambda: {name: v.version for name, v in store.current().items()})


def test_reload_makes_a_version_and_a_restart_keeps_it(
    start_server: Callable[..., RunningServer], catalog_dir: Path
) -> None:
    server = start_server(catalog_dir)
    assert versions(server) == {"home_layout": 1}
    assert server.app.reload_catalogs()
    assert versions(server) == {"home_layout": 1}  # unchanged file: no new version
    write_catalog(catalog_dir, "home_layout", {**LAYOUTS, "deals": {"style": "deals"}}, reward_window_seconds=60)
    assert server.app.reload_catalogs()
    assert versions(server) == {"home_layout": 2}
    served = {server.client.decide(f"s{i}", "home_layout", candidate_action_ids=["deals"]).action_id for i in range(3)}
    assert served == {"deals"}
    store = server.app.catalog_store
    assert store is not None
    [event] = server.call(lambda: store.audit(1))
    assert event.version == 2 and "+- id: deals" in event.diff
    server.stop()

    again = start_server(catalog_dir)  # same data directory
    assert versions(again) == {"home_layout": 2}
    assert again.metric("tailor_corrupt_state_total", {"what": "catalog"}) == 0
    assert again.client.decide("s", "home_layout", candidate_action_ids=["deals"]).action_id == "deals"
