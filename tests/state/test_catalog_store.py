"""One contract suite for both catalog stores (files, and a real redis-server): versions, history, optimistic
concurrency, rollback, the directory's precedence, the audit log, concurrent writers; and for the file store,
what survives a restart (a new store object on the same folder)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from server.catalogs import load_catalog_document
from server.state.catalogs import (
    DIRECTORY_ACTOR,
    STORE_FORMAT,
    CatalogDirectory,
    CatalogStore,
    FileCatalogStore,
    RedisCatalogStore,
    UnknownVersion,
    VersionConflict,
)

from ..redis_server import async_client

MakeStore = Callable[..., CatalogStore]


@pytest.fixture(params=["files", "redis", "cluster"])
async def make(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MakeStore]:
    """Stores of one backend over the same state (a second call: another process, or a restart)."""
    if request.param == "files":
        yield lambda **kw: FileCatalogStore(tmp_path, **kw)
        return
    client = async_client(request.param, request)
    prefix = f"t{uuid.uuid4().hex[:8]}"
    yield lambda **kw: RedisCatalogStore(client, prefix, **kw)
    await client.aclose()


def catalog(name: str = "home_layout", *actions: str, window: float | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {"decision_point": name, "actions": [{"id": a} for a in actions or ("grid", "carousel")]}
    if window is not None:
        doc["policy"] = {"reward_window_seconds": window}
    return doc


async def test_the_directory_seeds_once_and_a_changed_file_makes_one_new_version(make: MakeStore) -> None:
    store = make()
    events = await store.apply_directory({"home_layout": catalog(), "cart_offer": catalog("cart_offer", "ten_off")})
    assert [(e.decision_point, e.action, e.version, e.actor) for e in events] == [
        ("cart_offer", "create", 1, DIRECTORY_ACTOR),
        ("home_layout", "create", 1, DIRECTORY_ACTOR),
    ]  # in name order
    for _ in range(3):  # SIGHUP with nothing changed, or N replicas applying the same ConfigMap
        assert (
            await store.apply_directory({"home_layout": catalog(), "cart_offer": catalog("cart_offer", "ten_off")})
            == []
        )
    wider = catalog("home_layout", "grid", "carousel", "editorial")
    [event] = await store.apply_directory({"home_layout": wider, "cart_offer": catalog("cart_offer", "ten_off")})
    assert (event.decision_point, event.action, event.version) == ("home_layout", "update", 2)
    changed = [line for line in event.diff.splitlines()[2:] if line[:1] in "+-"]
    assert changed == ["+- id: editorial"]
    assert [v.version for v in await store.history("home_layout")] == [1, 2]
    assert (await store.current())["home_layout"].document == catalog("home_layout", "grid", "carousel", "editorial")


async def test_expected_version_rejects_a_lost_update(make: MakeStore) -> None:
    store = make()
    await store.apply_directory({"home_layout": catalog()})
    mine = await store.put(catalog("home_layout", "grid"), "alice", expected_version=1)
    assert mine.version == 2
    with pytest.raises(VersionConflict) as conflict:  # bob read version 1 too
        await store.put(catalog("home_layout", "carousel"), "bob", expected_version=1)
    assert (conflict.value.expected, conflict.value.current) == (1, 2)
    with pytest.raises(VersionConflict):
        await store.put(catalog("cart_offer", "x"), "bob", expected_version=3)  # does not exist: current is 0
    assert (await store.put(catalog("cart_offer", "x"), "bob", expected_version=0)).version == 1
    assert (await store.current())["home_layout"].document == catalog("home_layout", "grid")
    assert (await store.put(catalog("home_layout", "grid"), "carol")).version == 2  # same content: no new version


async def test_an_api_edit_stands_until_the_file_itself_changes_and_then_the_replacement_is_audited(
    make: MakeStore,
) -> None:
    store = make()
    await store.apply_directory({"home_layout": catalog()})
    await store.put(catalog("home_layout", "grid", "editorial"), "alice")
    assert await store.apply_directory({"home_layout": catalog()}) == []  # the file did not change: alice's edit stands
    assert (await store.current())["home_layout"].actor == "alice"
    [event] = await store.apply_directory({"home_layout": catalog("home_layout", "grid", "deals")})
    assert event.actor == DIRECTORY_ACTOR and event.version == 3
    assert "replaces version 2 (api, alice)" in event.note
    assert (await store.current())["home_layout"].document == catalog("home_layout", "grid", "deals")


async def test_a_removed_file_deletes_only_what_the_directory_made(make: MakeStore) -> None:
    store = make()
    await store.apply_directory({"home_layout": catalog(), "cart_offer": catalog("cart_offer", "ten_off")})
    await store.put(catalog("cart_offer", "ten_off", "free_shipping"), "alice")
    events = await store.apply_directory({}, removed={"home_layout", "cart_offer"})
    assert [(e.decision_point, e.action) for e in events] == [("home_layout", "delete")]
    assert set(await store.current()) == {"cart_offer"}  # alice's edit is hers now: the directory no longer owns it


async def test_delete_rollback_and_recreate_continue_one_numbering(make: MakeStore) -> None:
    store = make()
    await store.put(catalog(window=60), "alice")
    await store.put(catalog(window=120), "alice")
    with pytest.raises(VersionConflict):
        await store.delete("home_layout", "bob", expected_version=1)
    gone = await store.delete("home_layout", "bob", expected_version=2)
    assert gone.version == 3 and gone.document is None and "home_layout" not in await store.current()
    with pytest.raises(UnknownVersion):
        await store.delete("home_layout", "bob")
    back = await store.rollback("home_layout", 1, "carol", expected_version=0)  # re-created from version 1
    assert back.version == 4 and back.origin == "rollback" and back.document == catalog(window=60)
    with pytest.raises(UnknownVersion):
        await store.rollback("home_layout", 3, "carol")  # the deletion holds no catalog
    assert [(e.action, e.version, e.actor) for e in await store.audit(decision_point="home_layout")] == [
        ("rollback", 4, "carol"),
        ("delete", 3, "bob"),
        ("update", 2, "alice"),
        ("create", 1, "alice"),
    ]
    assert "reward_window_seconds: 60" in (await store.audit(1))[0].diff


async def test_a_restart_reads_everything_back_and_sets_a_corrupt_version_aside(tmp_path: Path) -> None:
    store = FileCatalogStore(tmp_path)
    await store.apply_directory({"home_layout": catalog()})
    await store.put(catalog("home_layout", "grid"), "alice")
    files = sorted((tmp_path / "home_layout").glob("*.json"))
    assert [json.loads(f.read_text())["format"] for f in files] == [STORE_FORMAT, STORE_FORMAT]
    again = FileCatalogStore(tmp_path)
    assert {n: v.version for n, v in (await again.current()).items()} == {"home_layout": 2}
    assert await again.apply_directory({"home_layout": catalog()}) == []  # the directory state survived too
    assert len(await again.audit()) == 2
    files[-1].write_text('{"format": 1, "decision_p')  # torn
    corrupt: list[Path] = []
    third = FileCatalogStore(tmp_path, on_corrupt=lambda path, why: corrupt.append(path))
    assert corrupt == [files[-1]] and files[-1].with_name(files[-1].name + ".corrupt").exists()
    assert (await third.current())["home_layout"].version == 1  # the version before it
    assert (await third.put(catalog("home_layout", "carousel"), "bob")).version == 2


async def test_the_audit_log_is_bounded(make: MakeStore) -> None:
    store = make(audit_kept=5)
    for window in range(1, 16):
        await store.put(catalog(window=window), "alice")
    assert len(await store.audit(100)) <= 10
    assert [e.version for e in await store.audit(5)] == [15, 14, 13, 12, 11]  # the newest are kept


async def test_concurrent_writers_make_one_version_and_expected_version_lets_one_edit_win(make: MakeStore) -> None:
    # Four processes over one state (one ConfigMap mounted by each); the data directory has one owner, so there
    # four tasks of that process.
    one = make()
    replicas = [make() for _ in range(4)] if isinstance(one, RedisCatalogStore) else [one] * 4
    seeded = await asyncio.gather(*(r.apply_directory({"home_layout": catalog()}) for r in replicas))
    assert sorted(len(events) for events in seeded) == [0, 0, 0, 1]
    edits = [catalog("home_layout", "grid", extra) for extra in ("a", "b", "c", "d")]
    outcomes = await asyncio.gather(
        *(r.put(doc, f"editor{i}", expected_version=1) for i, (r, doc) in enumerate(zip(replicas, edits, strict=True))),
        return_exceptions=True,
    )
    won = [o for o in outcomes if not isinstance(o, BaseException)]
    assert len(won) == 1 and all(isinstance(o, VersionConflict) for o in outcomes if o not in won)
    assert [v.version for v in await replicas[3].history("home_layout")] == [1, 2]
    assert (await replicas[0].current())["home_layout"].actor == won[0].actor
    await asyncio.gather(*(r.put(catalog(window=w), "many") for r, w in zip(replicas, (1, 2, 3, 4), strict=True)))
    assert [v.version for v in await replicas[1].history("home_layout")] == [1, 2, 3, 4, 5, 6]  # none lost


async def test_the_directory_as_a_process_sees_it(make: MakeStore) -> None:
    def compiled(*docs: dict[str, Any]) -> dict[str, Any]:
        return {d["decision_point"]: load_catalog_document(d, Path(d["decision_point"])) for d in docs}

    one = make()

    def process() -> CatalogStore:  # the data directory has one owner: the file store is shared
        return make() if isinstance(one, RedisCatalogStore) else one

    new, old = CatalogDirectory(process()), CatalogDirectory(process())
    assert len(await old.apply(compiled(catalog()))) == 1  # an old replica started with the old ConfigMap
    wider = catalog("home_layout", "grid", "carousel", "editorial")
    events = await new.apply(compiled(wider, catalog("cart_offer", "ten_off")))
    assert [(e.decision_point, e.version) for e in events] == [("cart_offer", 1), ("home_layout", 2)]
    assert await old.apply(compiled(catalog())) == []  # SIGHUP on the old replica: its files did not change
    assert (await new.store.current())["home_layout"].document == wider  # not replaced by the old files
    restarted = CatalogDirectory(process())  # a restart with the new files: nothing to do
    assert await restarted.apply(compiled(wider, catalog("cart_offer", "ten_off"))) == []
    [gone] = await restarted.apply(compiled(wider))  # a file removed under a running process
    assert (gone.decision_point, gone.action) == ("cart_offer", "delete")
    again = CatalogDirectory(process())  # a start without that file: it stays deleted, nothing more
    assert await again.apply(compiled(wider)) == []
