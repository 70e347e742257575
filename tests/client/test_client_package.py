"""The gateway install: `clients/python` builds a wheel with only `tailor` (stubs and typed client), installed
here into a fresh virtual environment with nothing of the server's, and used against a real `tailor serve`."""

from __future__ import annotations

import json
import subprocess
import venv
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..conftest import LAYOUTS, ServeProcess, write_catalog

REPO = Path(__file__).resolve().parents[2]
CLIENT_PROJECT = REPO / "clients" / "python"

#: What a serving install brings and a gateway must not get: the server's import names and its heavy dependencies.
SERVER_ONLY = ("server", "policies", "vowpalwabbit", "pylibvw", "redis", "pydantic", "pydantic_settings", "yaml",
               "matplotlib", "prometheus_client")  # fmt: skip


@pytest.fixture(scope="module")
def gateway_python(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh venv (no system site-packages) with the client project installed from the checkout."""
    root = tmp_path_factory.mktemp("gateway")
    venv.create(root / "venv", with_pip=True)
    python = root / "venv" / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(CLIENT_PROJECT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    yield python


def _run(python: Path, code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    # Run outside the checkout, so that `tailor` can only come from what was installed.
    return subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=60, cwd=cwd)


def test_the_client_install_has_the_api_and_nothing_of_the_server(gateway_python: Path, tmp_path: Path) -> None:
    code = f"""
import importlib.util, json, tailor
print(json.dumps({{"tailor": tailor.__file__, "found": [m for m in {SERVER_ONLY!r} if importlib.util.find_spec(m)]}}))
"""
    run = _run(gateway_python, code, tmp_path)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert "site-packages" in report["tailor"]
    assert report["found"] == []


def test_the_client_wheel_ships_exactly_the_repos_api_package(gateway_python: Path, tmp_path: Path) -> None:
    code = "import json, pathlib, tailor; print(json.dumps(str(pathlib.Path(tailor.__file__).parent)))"
    run = _run(gateway_python, code, tmp_path)
    assert run.returncode == 0, run.stderr
    installed = Path(json.loads(run.stdout))

    def sources(root: Path) -> dict[str, bytes]:
        return {
            str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.suffix in (".py", ".pyi", ".typed")
        }

    shipped, repo = sources(installed), sources(REPO / "tailor")
    assert sorted(shipped) == sorted(repo)
    assert shipped == repo  # the same stubs the server speaks, byte for byte


GATEWAY = """
import json, sys
import grpc
from tailor import TailorClient
from tailor.v1.decision_service_pb2 import EVENT_TYPE_PRODUCT_VIEW, REWARD_STATUS_ACCEPTED, SessionEvent

out = {}
with TailorClient(sys.argv[1]) as client:
    accepted = client.track_events([SessionEvent(session_id="gw-1", type=EVENT_TYPE_PRODUCT_VIEW, category="shoes",
                                                 price=89.0)])
    out["accepted"] = accepted.accepted
    out["session"] = client.get_session("gw-1")
    d = client.decide("gw-1", "home_layout", context={"device": "mobile", "basket_value": 35.5})
    out["decision"] = [d.action_id, d.probability, sorted(r.action_id for r in d.ranking), dict(d.payload)]
    [result] = client.report_rewards([(d.event_id, 1.0, "order-1")])
    out["reward_accepted"] = result.status == REWARD_STATUS_ACCEPTED
    try:
        client.decide("gw-1", "no_such_point")
    except grpc.RpcError as err:
        out["unknown_point"] = err.code().name
print(json.dumps(out))
"""


def test_a_gateway_with_only_the_client_talks_to_a_running_server(gateway_python: Path, tmp_path: Path) -> None:
    catalogs = tmp_path / "catalogs"
    catalogs.mkdir()
    write_catalog(catalogs, "home_layout", LAYOUTS)
    served = ServeProcess(catalogs, tmp_path / "data")
    try:
        served.wait_serving()
        run = subprocess.run(
            [str(gateway_python), "-c", GATEWAY, served.target],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
    finally:
        assert served.terminate() == 0
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["accepted"] == 1
    assert out["session"]["top_category"] == "shoes"
    action, probability, ranked, payload = out["decision"]
    assert action in LAYOUTS and 0 < probability <= 1
    assert ranked == sorted(LAYOUTS)
    assert payload == {"template": f"{action}_v1"}
    assert out["reward_accepted"] is True
    assert out["unknown_point"] == "NOT_FOUND"
