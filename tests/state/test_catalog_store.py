"""The catalog store on files: versions, history, optimistic concurrency, rollback, the directory's precedence,
the audit log, and what survives a restart (a new store object on the same folder)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from server.state.catalogs import (
    DIRECTORY_ACTOR,
    STORE_FORMAT,
    FileCatalogStore,
    UnknownVersion,
    VersionConflict,
)


def catalog(name: str = "home_layout", *actions: str, window: float | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {"decision_point": name, "actions": [{"id": a} for a in actions or ("grid", "carousel")]}
    if window is not None:
        doc["policy"] = {"reward_window_seconds": window}
    return doc


def test_the_directory_seeds_once_and_a_changed_file_makes_one_new_version(tmp_path: Path) -> None:
    store = FileCatalogStore(tmp_path)
    events = store.apply_directory({"home_layout": catalog(), "cart_offer": catalog("cart_offer", "ten_off")})
    assert [(e.decision_point, e.action, e.version, e.actor) for e in events] == [
        ("home_layout", "create", 1, DIRECTORY_ACTOR),
        ("cart_offer", "create", 1, DIRECTORY_ACTOR),
    ]
    for _ in range(3):  # SIGHUP with nothing changed, or N replicas applying the same ConfigMap
        assert store.apply_directory({"home_layout": catalog(), "cart_offer": catalog("cart_offer", "ten_off")}) == []
    wider = catalog("home_layout", "grid", "carousel", "editorial")
    [event] = store.apply_directory({"home_layout": wider, "cart_offer": catalog("cart_offer", "ten_off")})
    assert (event.decision_point, event.action, event.version) == ("home_layout", "update", 2)
    changed = [line for line in event.diff.splitlines()[2:] if line[:1] in "+-"]
    assert changed == ["+- id: editorial"]
    assert [v.version for v in store.history("home_layout")] == [1, 2]
    assert store.current()["home_layout"].document == catalog("home_layout", "grid", "carousel", "editorial")


def test_expected_version_rejects_a_lost_update(tmp_path: Path) -> None:
    store = FileCatalogStore(tmp_path)
    store.apply_directory({"home_layout": catalog()})
    mine = store.put(catalog("home_layout", "grid"), "alice", expected_version=1)
    assert mine.version == 2
    with pytest.raises(VersionConflict) as conflict:  # bob read version 1 too
        store.put(catalog("home_layout", "carousel"), "bob", expected_version=1)
    assert (conflict.value.expected, conflict.value.current) == (1, 2)
    with pytest.raises(VersionConflict):
        store.put(catalog("cart_offer", "x"), "bob", expected_version=3)  # does not exist: current is 0
    assert store.put(catalog("cart_offer", "x"), "bob", expected_version=0).version == 1
    assert store.current()["home_layout"].document == catalog("home_layout", "grid")
    assert store.put(catalog("home_layout", "grid"), "carol").version == 2  # same content: no new version


def test_an_api_edit_stands_until_the_file_itself_changes_and_then_the_replacement_is_audited(tmp_path: Path) -> None:
    store = FileCatalogStore(tmp_path)
    store.apply_directory({"home_layout": catalog()})
    store.put(catalog("home_layout", "grid", "editorial"), "alice")
    assert store.apply_directory({"home_layout": catalog()}) == []  # the file did not change: alice's edit stands
    assert store.current()["home_layout"].actor == "alice"
    [event] = store.apply_directory({"home_layout": catalog("home_layout", "grid", "deals")})
    assert event.actor == DIRECTORY_ACTOR and event.version == 3
    assert "replaces version 2 (api, alice)" in event.note
    assert store.current()["home_layout"].document == catalog("home_layout", "grid", "deals")


def test_a_removed_file_deletes_only_what_the_directory_made(tmp_path: Path) -> None:
    store = FileCatalogStore(tmp_path)
    store.apply_directory({"home_layout": catalog(), "cart_offer": catalog("cart_offer", "ten_off")})
    store.put(catalog("cart_offer", "ten_off", "free_shipping"), "alice")
    events = store.apply_directory({})
    assert [(e.decision_point, e.action) for e in events] == [("home_layout", "delete")]
    assert set(store.current()) == {"cart_offer"}  # alice's edit is hers now: the directory no longer owns it


def test_delete_rollback_and_recreate_continue_one_numbering(tmp_path: Path) -> None:
    store = FileCatalogStore(tmp_path)
    store.put(catalog(window=60), "alice")
    store.put(catalog(window=120), "alice")
    with pytest.raises(VersionConflict):
        store.delete("home_layout", "bob", expected_version=1)
    gone = store.delete("home_layout", "bob", expected_version=2)
    assert gone.version == 3 and gone.document is None and "home_layout" not in store.current()
    with pytest.raises(UnknownVersion):
        store.delete("home_layout", "bob")
    back = store.rollback("home_layout", 1, "carol", expected_version=0)  # re-created from version 1
    assert back.version == 4 and back.origin == "rollback" and back.document == catalog(window=60)
    with pytest.raises(UnknownVersion):
        store.rollback("home_layout", 3, "carol")  # the deletion holds no catalog
    assert [(e.action, e.version, e.actor) for e in store.audit(decision_point="home_layout")] == [
        ("rollback", 4, "carol"),
        ("delete", 3, "bob"),
        ("update", 2, "alice"),
        ("create", 1, "alice"),
    ]
    assert "reward_window_seconds: 60" in store.audit(1)[0].diff


def test_a_restart_reads_everything_back_and_sets_a_corrupt_version_aside(tmp_path: Path) -> None:
    store = FileCatalogStore(tmp_path)
    store.apply_directory({"home_layout": catalog()})
    store.put(catalog("home_layout", "grid"), "alice")
    files = sorted((tmp_path / "home_layout").glob("*.json"))
    assert [json.loads(f.read_text())["format"] for f in files] == [STORE_FORMAT, STORE_FORMAT]
    again = FileCatalogStore(tmp_path)
    assert {n: v.version for n, v in again.current().items()} == {"home_layout": 2}
    assert again.apply_directory({"home_layout": catalog()}) == []  # the directory state survived too
    assert len(again.audit()) == 2
    files[-1].write_text('{"format": 1, "decision_p')  # torn
    corrupt: list[Path] = []
    third = FileCatalogStore(tmp_path, on_corrupt=lambda path, why: corrupt.append(path))
    assert corrupt == [files[-1]] and files[-1].with_name(files[-1].name + ".corrupt").exists()
    assert third.current()["home_layout"].version == 1  # the version before it
    assert third.put(catalog("home_layout", "carousel"), "bob").version == 2


def test_the_audit_log_is_bounded(tmp_path: Path) -> None:
    store = FileCatalogStore(tmp_path, audit_kept=5)
    for window in range(1, 16):
        store.put(catalog(window=window), "alice")
    assert len(store.audit(100)) <= 10
    assert [e.version for e in store.audit(5)] == [15, 14, 13, 12, 11]  # the newest are kept
