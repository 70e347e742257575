"""API keys and roles, over real gRPC: who gets UNAUTHENTICATED, PERMISSION_DENIED or an answer."""

from __future__ import annotations

import hashlib
import logging
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from server.api import METHOD_ROLES, ROLES
from tailor import TailorClient
from tailor.v1 import admin_service_pb2 as apb
from tailor.v1 import decision_service_pb2 as pb

from ..conftest import RunningServer, ServeProcess
from . import code_of

KEYS = {"storefront": ["decide"], "support": ["session"], "ops": ["admin"], "dash": ["observe"]}


def write_keys(path: Path, keys: dict[str, list[str]], secret: Callable[[str], str] = lambda n: f"key-of-{n}") -> None:
    entries = [
        {"name": n, "sha256": hashlib.sha256(secret(n).encode()).hexdigest(), "roles": r} for n, r in keys.items()
    ]
    path.write_text(yaml.safe_dump({"keys": entries}))


@pytest.fixture
def keyed(start_server: Callable[..., RunningServer], catalog_dir: Path, tmp_path: Path) -> RunningServer:
    keys = tmp_path / "keys.yaml"
    write_keys(keys, KEYS)
    return start_server(catalog_dir, api_keys=keys, credentials_poll_seconds=0.05)


def client(server: RunningServer, name: str | None) -> TailorClient:
    return TailorClient("", channel=server.channel, api_key=f"key-of-{name}" if name else None)


def test_every_rpc_has_a_role() -> None:
    """The role map is complete: an RPC added to the contract without a role fails here, not in production."""
    for service in (pb.DESCRIPTOR.services_by_name["DecisionService"], apb.DESCRIPTOR.services_by_name["AdminService"]):
        for method in service.methods:
            assert METHOD_ROLES.get(f"/{service.full_name}/{method.name}") in ROLES, method.name


def test_roles_decide_who_may_call_what(keyed: RunningServer) -> None:
    def decide(name: str | None) -> grpc.StatusCode:
        return code_of(lambda: client(keyed, name).decide("s1", "home_layout"))

    def get(name: str | None) -> grpc.StatusCode:
        return code_of(lambda: client(keyed, name).get_session("s1"))

    def delete(name: str | None) -> grpc.StatusCode:
        return code_of(lambda: client(keyed, name).delete_session("s1"))

    C = grpc.StatusCode

    assert decide("storefront") == C.OK
    assert decide("ops") == C.OK  # admin has every role
    assert get("support") == C.OK and get("ops") == C.OK
    assert get("storefront") == C.PERMISSION_DENIED
    assert decide("support") == C.PERMISSION_DENIED
    assert decide("dash") == C.PERMISSION_DENIED and delete("dash") == C.PERMISSION_DENIED
    assert delete("storefront") == C.PERMISSION_DENIED
    assert delete("support") == C.OK
    assert decide(None) == C.UNAUTHENTICATED
    assert decide("nobody") == C.UNAUTHENTICATED  # an unknown key
    assert code_of(lambda: keyed.client.track_events([])) == C.UNAUTHENTICATED
    assert keyed.metric("tailor_rpcs_rejected_total", {"reason": "missing_key"}) == 2
    assert keyed.metric("tailor_rpcs_rejected_total", {"reason": "unknown_key"}) == 1
    assert keyed.metric("tailor_rpcs_rejected_total", {"reason": "permission_denied"}) == 5


def test_refusals_say_what_to_do(keyed: RunningServer) -> None:
    with pytest.raises(grpc.RpcError) as missing:
        client(keyed, None).decide("s", "home_layout")
    assert "authorization: Bearer" in (missing.value.details() or "")
    with pytest.raises(grpc.RpcError) as denied:
        client(keyed, "support").decide("s", "home_layout")
    assert denied.value.details() == "key 'support' lacks the role 'decide' that Decide needs"
    malformed = keyed.stub.Decide
    with pytest.raises(grpc.RpcError) as basic:
        malformed(
            pb.DecideRequest(session_id="s", decision_point="home_layout"), metadata=(("authorization", "Basic x"),)
        )
    assert basic.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_health_is_open_and_reflection_needs_a_key(keyed: RunningServer) -> None:
    health = health_pb2_grpc.HealthStub(keyed.channel)
    assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == health_pb2.HealthCheckResponse.SERVING
    reflect = reflection_pb2_grpc.ServerReflectionStub(keyed.channel)
    ask = [reflection_pb2.ServerReflectionRequest(list_services="")]
    with pytest.raises(grpc.RpcError) as anonymous:
        list(reflect.ServerReflectionInfo(iter(ask), timeout=5))
    assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED
    answers = list(
        reflect.ServerReflectionInfo(iter(ask), timeout=5, metadata=[("authorization", "Bearer key-of-dash")])
    )
    assert "tailor.v1.DecisionService" in {s.name for s in answers[0].list_services_response.service}


def test_keys_never_reach_the_log(keyed: RunningServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secrets = ["key-of-storefront", "key-of-nobody", "key-of-support"]
    for name in ("storefront", "nobody", "support"):
        caller = client(keyed, name)
        code_of(lambda: caller.decide("s", "home_layout"))  # noqa: B023  # called at once
        code_of(lambda: caller.delete_session("s"))  # noqa: B023
    assert caplog.records  # the refusals were logged...
    assert not any(s in r.getMessage() for r in caplog.records for s in secrets)  # ...without the keys


def test_a_changed_key_file_is_picked_up_without_a_signal(keyed: RunningServer, tmp_path: Path) -> None:
    """Kubernetes updates a mounted Secret in place: the new key works, the removed one stops, no restart."""
    assert keyed.config.api_keys is not None
    write_keys(keyed.config.api_keys, {"storefront2": ["decide"]})
    assert keyed.wait_for(lambda: keyed.metric("tailor_api_keys") == 1)
    assert code_of(lambda: client(keyed, "storefront2").decide("s", "home_layout")) == grpc.StatusCode.OK
    assert code_of(lambda: client(keyed, "storefront").decide("s", "home_layout")) == grpc.StatusCode.UNAUTHENTICATED


def test_a_broken_key_file_keeps_the_loaded_keys(keyed: RunningServer) -> None:
    assert keyed.config.api_keys is not None
    keyed.config.api_keys.write_text("keys:\n  - {name: x, sha256: not-a-digest, roles: [decide]}\n")
    assert keyed.wait_for(
        lambda: keyed.metric("tailor_credential_reloads_total", {"what": "keys", "result": "error"}) >= 1
    )
    assert code_of(lambda: client(keyed, "storefront").decide("s", "home_layout")) == grpc.StatusCode.OK
    assert keyed.metric("tailor_api_keys") == len(KEYS)


def test_sighup_rereads_the_key_file(catalog_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    keys = tmp_path / "keys.yaml"
    write_keys(keys, {"storefront": ["decide"]})
    monkeypatch.setenv("TAILOR_CREDENTIALS_POLL_SECONDS", "3600")  # only the signal can show the change in time
    proc = ServeProcess(catalog_dir, tmp_path / "data", "--api-keys", str(keys)).wait_serving()
    keyed = TailorClient(proc.target, api_key="key-of-storefront")
    try:
        assert code_of(lambda: keyed.decide("s", "home_layout")) == grpc.StatusCode.OK
        write_keys(keys, {"storefront": ["session"]})
        proc.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while code_of(lambda: keyed.decide("s", "home_layout")) == grpc.StatusCode.OK and time.monotonic() < deadline:
            time.sleep(0.05)
        assert code_of(lambda: keyed.decide("s", "home_layout")) == grpc.StatusCode.PERMISSION_DENIED
        assert "API keys reloaded" in proc.log.read_text()
    finally:
        keyed.close()
        assert proc.terminate() == 0


def test_keys_new_prints_a_key_and_its_entry_and_the_server_takes_it(
    catalog_dir: Path, tmp_path: Path, start_server: Callable[..., RunningServer]
) -> None:
    made = subprocess.run(
        [
            sys.executable,
            "-m",
            "server",
            "keys",
            "new",
            "--name",
            "storefront",
            "--role",
            "decide",
            "--role",
            "session",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    key = next(line.strip() for line in made.stdout.splitlines() if line.strip().startswith("tlr_"))
    entry = yaml.safe_load(made.stdout.split("entry for the --api-keys file:", 1)[1])
    assert entry["keys"][0] == {
        "name": "storefront",
        "sha256": hashlib.sha256(key.encode()).hexdigest(),
        "roles": ["decide", "session"],
    }
    (tmp_path / "keys.yaml").write_text(yaml.safe_dump(entry))
    server = start_server(catalog_dir, api_keys=tmp_path / "keys.yaml")
    assert TailorClient("", channel=server.channel, api_key=key).decide("s", "home_layout").action_id


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("keys: [{name: a, sha256: abc, roles: [decide]}]\n", "64 lowercase hex"),
        ("keys: [{name: a, sha256: " + "0" * 64 + ", roles: [root]}]\n", "roles"),
        ("keys: [{name: a, key: secret, roles: [decide]}]\n", "key"),
        ("keys: [\n", "not valid YAML"),
    ],
    ids=["not-a-digest", "unknown-role", "plain-key", "bad-yaml"],
)
def test_serve_refuses_to_start_with_a_bad_key_file(
    catalog_dir: Path, tmp_path: Path, content: str, problem: str
) -> None:
    keys = tmp_path / "keys.yaml"
    keys.write_text(content)
    result = subprocess.run(
        [sys.executable, "-m", "server", "serve", "--catalogs", str(catalog_dir), "--port", "0",
         "--metrics-port", "0", "--data-dir", str(tmp_path / "d"), "--api-keys", str(keys)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert str(keys) in result.stderr and problem in result.stderr
    assert "Traceback" not in result.stderr
