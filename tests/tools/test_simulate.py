"""`tailor simulate`: a short real run against the embedded server, one against a running server, and
the shopper model's own honesty (without a server)."""

from __future__ import annotations

import hashlib
import json
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from server._cli import main
from server.tools.simulator import (
    ACTIONS,
    INTENTS,
    Shopper,
    ShopperFactory,
    best_single_action,
    catalog_document,
    segment_of,
    segment_rules,
)

from ..conftest import RunningServer
from ..pki import CA


def _results(out: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((out / "results.json").read_text())
    return doc


def test_a_short_embedded_run_learns_and_writes_its_report(tmp_path: Path) -> None:
    # Long enough that the service learns mid-run (each decision is learned when its 2 s reward window
    # closes, about 2,500 shoppers later at full speed), short enough for the suite: about 10 s.
    out = tmp_path / "out"
    argv = ["simulate", "--shoppers", "6000", "--warmup", "4000", "--block", "1000", "--seed", "7", "--out", str(out)]
    code = main(argv)

    results = _results(out)
    assert code == (0 if results["passed"] else 1)
    assert (out / "results.md").read_text().startswith("# tailor simulate: results")
    assert (out / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [b["end"] for b in results["blocks"]] == list(range(1000, 6001, 1000))

    overall = results["overall"]
    assert overall["oracle"] > overall["segment"] > overall["random"]
    assert overall["segment"] >= overall["single"] >= overall["random"]
    late = results["after_warmup"]
    assert late["service"] > 1.1 * late["random"], late

    # The whole loop ran: no event refused, every decision learned, rewarded ones through the catalog rules,
    # and the embedded server stopped cleanly on SIGTERM.
    integrity = [c for c in results["checks"] if c["kind"] == "integrity"]
    assert len(integrity) == 4
    assert all(c["passed"] for c in integrity), integrity
    run = results["run"]
    assert run["server_exit_code"] == 0
    assert run["learned"]["reward"] == run["outcomes"].get("purchase", 0) + run["outcomes"].get("cart", 0)


def test_it_drives_a_running_server_given_by_target(start_server: Callable[..., RunningServer], tmp_path: Path) -> None:
    catalogs = tmp_path / "catalogs"
    catalogs.mkdir()
    doc = catalog_document("shop_layout")
    (catalogs / "shop_layout.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    server = start_server(catalogs)
    out = tmp_path / "out"
    target = f"127.0.0.1:{server.port}"
    argv = ["simulate", "--target", target, "--decision-point", "shop_layout", "--shoppers", "300", "--warmup", "100"]
    code = main([*argv, "--block", "100", "--out", str(out)])

    results = _results(out)
    assert code == 1  # far too short to learn: the measure fails, and says so
    assert results["config"]["target"] == target
    assert results["run"]["events_rejected"] == 0
    assert server.metric("tailor_decisions_total", {"decision_point": "shop_layout"}) == 300


def test_it_drives_a_server_with_keys_and_mtls(
    start_server: Callable[..., RunningServer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    catalogs = tmp_path / "catalogs"
    catalogs.mkdir()
    (catalogs / "shop_layout.yaml").write_text(yaml.safe_dump(catalog_document("shop_layout"), sort_keys=False))
    ca = CA(tmp_path / "pki")
    served, client = ca.issue("server"), ca.issue("sim", server=False)
    keys = tmp_path / "keys.yaml"
    keys.write_text(
        yaml.safe_dump({"keys": [{"name": "sim", "sha256": hashlib.sha256(b"k").hexdigest(), "roles": ["decide"]}]})
    )
    server = start_server(catalogs, api_keys=keys, tls_cert=served.cert, tls_key=served.key, tls_client_ca=ca.path)
    target = f"localhost:{server.port}"
    argv = ["simulate", "--target", target, "--decision-point", "shop_layout", "--shoppers", "200", "--warmup", "100"]
    argv += ["--block", "100", "--out", str(tmp_path / "out"), "--tls-ca", str(ca.path)]
    mtls = ["--tls-cert", str(client.cert), "--tls-key", str(client.key)]

    assert main([*argv, *mtls]) == 2  # no key: UNAUTHENTICATED, the run cannot be done
    assert main([*argv, "--api-key", "k"]) == 2  # no client certificate: the handshake fails
    monkeypatch.setenv("TAILOR_API_KEY", "k")
    assert main([*argv, *mtls]) == 1  # runs (far too short to learn)
    assert server.metric("tailor_decisions_total", {"decision_point": "shop_layout"}) == 200


def test_bad_arguments_exit_2(tmp_path: Path) -> None:
    assert main(["simulate", "--shoppers", "100", "--warmup", "100", "--out", str(tmp_path)]) == 2
    assert not (tmp_path / "results.json").exists()


def test_the_shopper_model_is_honest_and_reproducible() -> None:
    shoppers = _population(3, 20_000)
    assert _population(3, 50) == shoppers[:50]  # same seed, same shoppers

    rules, single = segment_rules(), best_single_action()
    random_ = statistics.fmean(statistics.fmean(s.conversion.values()) for s in shoppers)
    segment = statistics.fmean(s.conversion[rules[segment_of(s.demographics)]] for s in shoppers)
    oracle = statistics.fmean(max(s.conversion.values()) for s in shoppers)
    assert segment >= 1.1 * random_
    assert oracle >= 1.25 * segment
    assert statistics.fmean(s.conversion[single] for s in shoppers) > random_
    # Each intent has its own best layout, and every layout is some intent's best.
    assert sorted(i.best_action for i in INTENTS) == sorted(ACTIONS)
    # Behaviour happened before the decision, oldest first.
    for s in shoppers[:500]:
        offsets = [e.seconds_before for e in s.events]
        assert offsets == sorted(offsets, reverse=True) and offsets[-1] >= 0


def _population(seed: int, n: int) -> list[Shopper]:
    factory = ShopperFactory(seed)
    return [factory.next() for _ in range(n)]


@pytest.mark.parametrize("command", ["simulate", "cluster"])
def test_without_the_sim_extra_the_command_says_how_to_install_it_before_running(command: str) -> None:
    # matplotlib is a serving install's missing piece: block its import as if the extra were not installed.
    code = f"import sys; sys.modules['matplotlib'] = None; from server._cli import main; sys.exit(main([{command!r}]))"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2, run.stderr
    assert "tailor-decisions[sim]" in run.stderr
    assert f"tailor {command}: the learning-curve plot needs matplotlib" in run.stderr
    assert "Traceback" not in run.stderr
    assert run.stdout == ""  # refused before any shopper was served or any process started
