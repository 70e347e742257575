"""`tailor catalog apply` against a real server: the diff first, then changes served at once, never an edit
made meanwhile overwritten, nothing applied when a file is invalid, and the roles of the key it sends."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from server.tools.catalog_apply import DirectoryError, apply_changes, apply_directory, plan, read_directory
from tailor import TailorClient, catalog_dict

from ..api.test_keys import write_keys
from ..conftest import LAYOUTS, RunningServer, write_catalog

DEALS = {**LAYOUTS, "deals": {"style": "deals", "density": 8}}
OFFERS = {"free_shipping": {"kind": "shipping"}, "ten_off": {"kind": "discount"}}


@pytest.fixture
def server(start_any: Callable[..., RunningServer], catalog_dir: Path) -> RunningServer:
    """Both backends: embedded, and a Redis-mode replica with a learner."""
    return start_any(catalog_dir)


@pytest.fixture
def edited(tmp_path: Path) -> Path:
    """The marketer's directory: home_layout with a new action `deals`."""
    folder = tmp_path / "edited"
    folder.mkdir()
    write_catalog(folder, "home_layout", DEALS, reward_window_seconds=60)
    return folder


def serves(client: TailorClient, decision_point: str, action: str) -> bool:
    try:
        return client.decide("probe", decision_point, candidate_action_ids=[action]).action_id == action
    except grpc.RpcError as err:
        assert err.code() in (
            grpc.StatusCode.INVALID_ARGUMENT,
            grpc.StatusCode.FAILED_PRECONDITION,
            grpc.StatusCode.NOT_FOUND,
        )
        return False


def apply(client: TailorClient, folder: Path, dry_run: bool = False) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = apply_directory(client, folder, dry_run, out, err)
    return code, out.getvalue(), err.getvalue()


def cli(server: RunningServer, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`tailor catalog apply` as a real subprocess, against the server's port."""
    command = [sys.executable, "-m", "server", "catalog", "apply", *args, "--target", f"127.0.0.1:{server.port}"]
    environ = {k: v for k, v in os.environ.items() if k != "TAILOR_API_KEY"} | (env or {})
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env=environ)


def test_dry_run_shows_the_diff_and_changes_nothing(server: RunningServer, edited: Path) -> None:
    code, out, err = apply(server.client, edited, dry_run=True)
    assert (code, err) == (0, "")
    assert "home_layout: version 1 -> 2" in out
    assert "    +- id: deals" in out and "dry run: 1 change(s) not applied" in out
    assert not serves(server.client, "home_layout", "deals")
    assert len(server.client.list_catalog_versions("home_layout")) == 1


def test_apply_serves_at_once_and_applying_again_changes_nothing(server: RunningServer, edited: Path) -> None:
    write_catalog(edited, "cart_offer", OFFERS)
    run = cli(server, str(edited))  # the command itself, as an operator runs it
    assert run.returncode == 0, run.stderr
    assert "home_layout: version 1 -> 2" in run.stdout and "cart_offer: new" in run.stdout
    assert "home_layout: applied, version 2" in run.stdout and "cart_offer: applied, version 1" in run.stdout
    assert serves(server.client, "home_layout", "deals") and serves(server.client, "cart_offer", "ten_off")

    code, out, _ = apply(server.client, edited)
    assert code == 0
    assert "home_layout: unchanged (version 2)" in out and "cart_offer: unchanged (version 1)" in out
    assert "nothing to apply" in out and "applied" not in out.replace("nothing to apply", "")
    assert [v.version for v in server.client.list_catalog_versions("home_layout")] == [2, 1]


def test_a_paused_or_scheduled_action_travels_as_written(server: RunningServer, edited: Path) -> None:
    """YAML reads `active_from` as a timestamp: it travels as its RFC 3339 text, and applying again is a no-op."""
    catalog = edited / "home_layout.yaml"
    catalog.write_text(
        catalog.read_text() + "- id: xmas\n  active_from: 2026-12-20T00:00:00+01:00\n- id: winter\n  paused: true\n"
    )
    code, out, err = apply(server.client, edited)
    assert (code, err) == (0, "") and "    +  active_from: '2026-12-20T00:00:00+01:00'" in out
    assert not serves(server.client, "home_layout", "winter") and serves(server.client, "home_layout", "deals")
    assert "home_layout: unchanged (version 2)" in apply(server.client, edited)[1]


def test_decision_points_without_a_file_are_left_as_they_are(
    start_server: Callable[..., RunningServer], catalog_dir: Path, edited: Path
) -> None:
    write_catalog(catalog_dir, "cart_offer", OFFERS)
    server = start_server(catalog_dir)
    code, out, _ = apply(server.client, edited)
    assert code == 0 and f"cart_offer: not in {edited} (left as is)" in out
    assert serves(server.client, "cart_offer", "ten_off") and serves(server.client, "home_layout", "deals")


def test_a_change_made_meanwhile_is_reported_not_overwritten(server: RunningServer, edited: Path) -> None:
    """Someone changes home_layout between the validation and the apply: apply must not overwrite it, but
    still applies the rest, and exits 1 with the server's message."""
    write_catalog(edited, "cart_offer", OFFERS)
    found = plan(server.client, read_directory(edited))
    assert [p.file.name for p in found.changes] == ["cart_offer", "home_layout"] and not found.problems

    theirs = catalog_dict(server.client.get_decision_point("home_layout").catalog)
    theirs["actions"].append({"id": "banner"})
    server.client.put_decision_point(theirs, expected_version=1)  # the other editor's change: version 2

    out, err = io.StringIO(), io.StringIO()
    assert apply_changes(server.client, found.changes, out, err) == 1
    assert "home_layout is at version 2, not 1" in err.getvalue() and str(edited / "home_layout.yaml") in err.getvalue()
    assert "cart_offer: applied, version 1" in out.getvalue()
    assert serves(server.client, "home_layout", "banner") and not serves(server.client, "home_layout", "deals")

    code, out_again, _ = apply(server.client, edited)  # read again and reapply: now it goes through
    assert code == 0 and "home_layout: version 2 -> 3" in out_again and "    -- id: banner" in out_again


def test_an_invalid_file_names_file_and_field_and_nothing_is_applied(server: RunningServer, edited: Path) -> None:
    bad = write_catalog(edited, "cart_offer", OFFERS, reward_window_seconds=-5)
    code, out, err = apply(server.client, edited)
    assert code == 1
    assert f"{bad}: policy.reward_window_seconds: Input should be greater than 0" in err
    assert "nothing applied" in err and "applied, version" not in out
    assert not serves(server.client, "home_layout", "deals")
    assert len(server.client.list_catalog_versions("home_layout")) == 1


def test_a_file_that_is_not_a_catalog_stops_before_the_server(tmp_path: Path, edited: Path) -> None:
    (edited / "notes.yaml").write_text("- just\n- a list\n")
    (edited / "launch.yml").write_text("decision_point: launch\nactions:\n  - {id: a, features: {since: 2024-05-01}}\n")
    (edited / "copy.yaml").write_text((edited / "home_layout.yaml").read_text())
    with pytest.raises(DirectoryError) as err:
        read_directory(edited)
    assert err.value.problems == [
        f"{edited / 'home_layout.yaml'}: decision_point: 'home_layout' is already defined in copy.yaml",
        f"{edited / 'launch.yml'}: actions[0].features.since: a date (2024-05-01) cannot travel in a catalog; quote it",
        f"{edited / 'notes.yaml'}: not a catalog: a catalog file is a mapping with a decision_point name",
    ]
    empty = tmp_path / "empty"
    empty.mkdir()
    with TailorClient("127.0.0.1:1") as unreachable:  # the files are read first: no call is made
        assert apply(unreachable, edited)[0] == 2
        assert apply(unreachable, tmp_path / "missing") == (2, "", f"{tmp_path / 'missing'}: not a directory\n")
        assert apply(unreachable, empty) == (2, "", f"{empty}: no catalog files (*.yaml, *.yml)\n")
        (empty / "home_layout.yaml").write_text((edited / "home_layout.yaml").read_text())
        code, _, message = apply(unreachable, empty)  # the server cannot be reached: one line, no traceback
        assert code == 2 and message.startswith("tailor catalog apply: UNAVAILABLE: ") and message.count("\n") == 1


def test_keys_decide_who_may_apply_and_never_show(
    start_server: Callable[..., RunningServer], catalog_dir: Path, edited: Path, tmp_path: Path
) -> None:
    key_file = tmp_path / "keys.yaml"
    write_keys(key_file, {"ops": ["admin"], "dash": ["observe"]})
    server = start_server(catalog_dir, api_keys=key_file)

    observe = cli(server, str(edited), "--api-key", "key-of-dash")
    assert observe.returncode == 2
    assert observe.stderr.startswith("tailor catalog apply: PERMISSION_DENIED: key 'dash' lacks the role 'admin'")
    assert "Traceback" not in observe.stderr and "key-of-dash" not in observe.stdout + observe.stderr
    nobody = cli(server, str(edited))
    assert nobody.returncode == 2 and "UNAUTHENTICATED" in nobody.stderr

    ops = cli(server, str(edited), env={"TAILOR_API_KEY": "key-of-ops"})
    assert ops.returncode == 0, ops.stderr
    assert "home_layout: applied, version 2" in ops.stdout and "key-of-ops" not in ops.stdout + ops.stderr
    admin = TailorClient("", channel=server.channel, api_key="key-of-ops")
    assert admin.list_audit_events("home_layout")[0].actor == "ops"
    assert serves(admin, "home_layout", "deals")
