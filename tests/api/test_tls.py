"""TLS and mTLS on the gRPC port, with a CA the test makes; certificates rotate without dropping calls."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tailor import TailorClient
from tailor.v1 import decision_service_pb2 as pb
from tailor.v1 import decision_service_pb2_grpc as pb_grpc

from ..conftest import RunningServer
from ..pki import CA, Issued
from . import code_of


def install(issued: Issued, folder: Path) -> tuple[Path, Path]:
    """Copy a certificate and key to the paths the server reads (as a Secret mount or certbot would)."""
    folder.mkdir(exist_ok=True)
    cert, key = folder / "tls.crt", folder / "tls.key"
    shutil.copyfile(issued.cert, cert)
    shutil.copyfile(issued.key, key)
    return cert, key


@pytest.fixture
def ca(tmp_path: Path) -> CA:
    return CA(tmp_path / "pki")


def test_tls_serves_clients_that_trust_the_ca_and_refuses_plaintext(
    start_server: Callable[..., RunningServer], catalog_dir: Path, ca: CA, tmp_path: Path
) -> None:
    cert, key = install(ca.issue("server"), tmp_path / "tls")
    server = start_server(catalog_dir, tls_cert=cert, tls_key=key)
    with TailorClient(f"localhost:{server.port}", root_certificates=ca.pem) as tls:
        assert tls.decide("s", "home_layout").action_id
    with TailorClient(f"127.0.0.1:{server.port}") as plain:
        assert code_of(lambda: plain.decide("s", "home_layout")) == grpc.StatusCode.UNAVAILABLE
    other = CA(tmp_path / "other", "another CA")
    with TailorClient(f"localhost:{server.port}", root_certificates=other.pem) as untrusting:
        assert code_of(lambda: untrusting.decide("s", "home_layout")) == grpc.StatusCode.UNAVAILABLE


def test_mtls_requires_a_client_certificate_from_the_client_ca(
    start_server: Callable[..., RunningServer], catalog_dir: Path, ca: CA, tmp_path: Path
) -> None:
    cert, key = install(ca.issue("server"), tmp_path / "tls")
    server = start_server(catalog_dir, tls_cert=cert, tls_key=key, tls_client_ca=ca.path)
    target = f"localhost:{server.port}"
    gateway = ca.issue("gateway", server=False)
    with TailorClient(target, root_certificates=ca.pem) as anonymous:
        assert code_of(lambda: anonymous.decide("s", "home_layout")) == grpc.StatusCode.UNAVAILABLE
    stranger = CA(tmp_path / "other", "another CA").issue("stranger", server=False)
    with TailorClient(
        target, root_certificates=ca.pem, client_cert=stranger.cert.read_bytes(), client_key=stranger.key.read_bytes()
    ) as foreign:
        assert code_of(lambda: foreign.decide("s", "home_layout")) == grpc.StatusCode.UNAVAILABLE
    with TailorClient(
        target, root_certificates=ca.pem, client_cert=gateway.cert.read_bytes(), client_key=gateway.key.read_bytes()
    ) as mutual:
        assert mutual.decide("s", "home_layout").action_id


def test_a_rotated_certificate_is_used_for_new_connections_without_dropping_open_calls(
    start_server: Callable[..., RunningServer], catalog_dir: Path, ca: CA, tmp_path: Path
) -> None:
    folder = tmp_path / "tls"
    cert, key = install(ca.issue("server"), folder)
    server = start_server(catalog_dir, tls_cert=cert, tls_key=key)
    target = f"localhost:{server.port}"
    old_channel = grpc.secure_channel(target, grpc.ssl_channel_credentials(ca.pem))
    release = threading.Event()

    def requests() -> Iterator[pb.TrackEventsRequest]:
        yield pb.TrackEventsRequest(events=[pb.SessionEvent(session_id="open", type=pb.EVENT_TYPE_PAGE_VIEW)])
        release.wait(30)
        yield pb.TrackEventsRequest(events=[pb.SessionEvent(session_id="open", type=pb.EVENT_TYPE_CLICK)])

    in_flight = pb_grpc.DecisionServiceStub(old_channel).TrackEvents.future(requests(), timeout=30)
    assert server.wait_for(lambda: server.app.guard.in_flight == 1)

    renewed = CA(tmp_path / "renewed", "renewed CA")
    install(renewed.issue("server"), folder)  # the files change on disk: no signal
    with TailorClient(target, root_certificates=renewed.pem) as fresh:
        assert fresh.decide("s", "home_layout").action_id
    with TailorClient(target, root_certificates=ca.pem) as stale:  # a new connection gets the new certificate
        assert code_of(lambda: stale.decide("s", "home_layout")) == grpc.StatusCode.UNAVAILABLE
    release.set()
    assert in_flight.result(timeout=10).accepted == 2  # the call open across the rotation finished
    assert server.metric("tailor_credential_reloads_total", {"what": "tls", "result": "ok"}) == 1
    old_channel.close()


def test_a_key_that_does_not_match_keeps_the_current_certificate(
    start_server: Callable[..., RunningServer], catalog_dir: Path, ca: CA, tmp_path: Path
) -> None:
    folder = tmp_path / "tls"
    cert, key = install(ca.issue("server"), folder)
    server = start_server(catalog_dir, tls_cert=cert, tls_key=key)
    shutil.copyfile(CA(tmp_path / "renewed", "renewed CA").issue("server").cert, cert)  # cert renewed, key not yet
    with TailorClient(f"localhost:{server.port}", root_certificates=ca.pem) as client:
        assert client.decide("s", "home_layout").action_id
    assert server.metric("tailor_credential_reloads_total", {"what": "tls", "result": "error"}) == 1


def test_sighup_rereads_the_certificates(
    start_server: Callable[..., RunningServer], catalog_dir: Path, ca: CA, tmp_path: Path
) -> None:
    folder = tmp_path / "tls"
    cert, key = install(ca.issue("server"), folder)
    server = start_server(catalog_dir, tls_cert=cert, tls_key=key)
    server.call(server.app.reload)  # what SIGHUP runs
    with TailorClient(f"localhost:{server.port}", root_certificates=ca.pem) as client:
        assert client.decide("s", "home_layout").action_id
    assert server.metric("tailor_credential_reloads_total", {"what": "tls", "result": "ok"}) == 1


def test_serve_refuses_a_certificate_without_its_key(tmp_path: Path, catalog_dir: Path, ca: CA) -> None:
    import subprocess
    import sys

    issued = ca.issue("server")
    other = ca.issue("other")
    result = subprocess.run(
        [sys.executable, "-m", "server", "serve", "--catalogs", str(catalog_dir), "--port", "0", "--metrics-port", "0",
         "--data-dir", str(tmp_path / "d"), "--tls-cert", str(issued.cert), "--tls-key", str(other.key)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert str(issued.cert) in result.stderr and "Traceback" not in result.stderr
    only_cert = subprocess.run(
        [sys.executable, "-m", "server", "serve", "--catalogs", str(catalog_dir), "--tls-cert", str(issued.cert)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert only_cert.returncode == 2 and "tls_key" in only_cert.stderr


def test_with_tls_on_the_health_port_answers_plaintext_probes_and_nothing_else(
    start_server: Callable[..., RunningServer], catalog_dir: Path, ca: CA, tmp_path: Path
) -> None:
    cert, key = install(ca.issue("server"), tmp_path / "tls")
    server = start_server(catalog_dir, tls_cert=cert, tls_key=key, health_port=0)
    assert server.app.health_port
    with grpc.insecure_channel(f"127.0.0.1:{server.app.health_port}") as probe:
        health = health_pb2_grpc.HealthStub(probe)
        for service in ("", "tailor.v1.DecisionService"):
            reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        decide = pb_grpc.DecisionServiceStub(probe).Decide
        request = pb.DecideRequest(session_id="s", decision_point="home_layout")
        assert code_of(lambda: decide(request, timeout=5)) == grpc.StatusCode.UNIMPLEMENTED
        server.run(server.app.health.enter_graceful_shutdown())  # what stop() does first
        reply = health.Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
