"""`rediss://`: Redis mode against a TLS-only redis-server with a CA the test makes."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from server.tools.launcher import free_port
from tailor.v1 import decision_service_pb2 as pb

from ..conftest import RunningServer
from ..pki import CA


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[int, CA]]:
    """A redis-server that speaks only TLS (no plaintext port), stopped by pid."""
    ca = CA(tmp_path / "pki")
    cert = ca.issue("server")
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", str(cert.cert), "--tls-key-file", str(cert.key), "--tls-ca-cert-file", str(ca.path),
         "--tls-auth-clients", "no", "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    client = redis.Redis(host="localhost", port=port, ssl=True, ssl_ca_certs=str(ca.path))
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield port, ca
    finally:
        client.close()
        proc.terminate()
        proc.wait(10)


def test_redis_mode_over_tls(
    start_server: Callable[..., RunningServer], catalog_dir: Path, tls_redis: tuple[int, CA]
) -> None:
    port, ca = tls_redis
    url = f"rediss://localhost:{port}/0?ssl_ca_certs={ca.path}"
    server = start_server(catalog_dir, redis_url=url, redis_prefix="tls")
    d = server.client.decide("s-tls", "home_layout", context={"device": "mobile"})
    assert [r.status for r in server.client.report_rewards([(d.event_id, 1.0, "r")])] == [pb.REWARD_STATUS_ACCEPTED]
    assert server.client.get_session("s-tls")  # the session lives in Redis, read back over TLS
    for step in ("read", "write"):
        assert server.metric("tailor_decide_fail_open_total", {"step": step}) == 0
    direct = redis.Redis(host="localhost", port=port, ssl=True, ssl_ca_certs=str(ca.path))
    assert direct.keys("tls:*")  # Tailor's keys, written over TLS
    direct.close()
