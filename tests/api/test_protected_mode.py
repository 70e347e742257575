"""Protected mode: without API keys only local callers are served.

Calls come only from addresses of this machine that the test controls: a forwarder the test runs
connects to the server *from 127.0.0.2*, and the server's trusted set is narrowed to 127.0.0.1, so
127.0.0.2 stands for "not local". No other host is ever contacted.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from server.api._guard import _peer_address
from tailor import TailorClient

from ..conftest import RunningServer


class Forwarder:
    """127.0.0.1:<port> -> the server, with connections to the server made from `source`."""

    def __init__(self, target_port: int, source: str, target_host: str = "127.0.0.1") -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.target = (target_host, target_port)
        self.source = source
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                inbound, _ = self.listener.accept()
            except OSError:
                return
            outbound = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            outbound.bind((self.source, 0))
            outbound.connect(self.target)
            self.sockets += [inbound, outbound]
            for a, b in ((inbound, outbound), (outbound, inbound)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.listener.close()
        for s in self.sockets:
            s.close()


@pytest.fixture
def from_127_0_0_2() -> Iterator[Callable[[RunningServer], TailorClient]]:
    opened: list[tuple[Forwarder, TailorClient]] = []

    def connect(server: RunningServer) -> TailorClient:
        forwarder = Forwarder(server.port, "127.0.0.2")
        client = TailorClient(f"127.0.0.1:{forwarder.port}")
        opened.append((forwarder, client))
        return client

    yield connect
    for forwarder, client in opened:
        client.close()
        forwarder.close()


def test_a_caller_outside_the_trusted_set_is_told_how_to_get_in(
    start_server: Callable[..., RunningServer],
    catalog_dir: Path,
    from_127_0_0_2: Callable[[RunningServer], TailorClient],
) -> None:
    server = start_server(catalog_dir, local_networks=("127.0.0.1/32",))
    assert server.client.decide("s", "home_layout").action_id  # from 127.0.0.1: served
    stranger = from_127_0_0_2(server)
    with pytest.raises(grpc.RpcError) as refused:
        stranger.decide("s", "home_layout")
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "--api-keys" in (refused.value.details() or "") and "--insecure" in (refused.value.details() or "")
    with pytest.raises(grpc.RpcError) as also:
        stranger.get_session("s")
    assert also.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert server.metric("tailor_rpcs_rejected_total", {"reason": "not_local"}) == 2


def test_insecure_serves_every_caller_without_keys(
    start_server: Callable[..., RunningServer],
    catalog_dir: Path,
    from_127_0_0_2: Callable[[RunningServer], TailorClient],
) -> None:
    server = start_server(catalog_dir, local_networks=("127.0.0.1/32",), insecure=True)
    assert from_127_0_0_2(server).decide("s", "home_layout").action_id


def test_the_default_trusted_set_is_loopback(
    start_server: Callable[..., RunningServer],
    catalog_dir: Path,
    from_127_0_0_2: Callable[[RunningServer], TailorClient],
) -> None:
    server = start_server(catalog_dir)
    assert from_127_0_0_2(server).decide("s", "home_layout").action_id  # 127.0.0.0/8 is loopback


def test_ipv4_mapped_loopback_on_a_dual_stack_socket_is_local(
    start_server: Callable[..., RunningServer], catalog_dir: Path
) -> None:
    """On `[::]` an IPv4 caller shows as `::ffff:127.0.0.1`; that is 127.0.0.1, not a stranger."""
    server = start_server(catalog_dir, host="[::]", local_networks=("127.0.0.1/32",))
    with TailorClient(f"127.0.0.1:{server.port}") as ipv4:
        assert ipv4.decide("s", "home_layout").action_id


def test_ipv6_loopback_is_local(start_server: Callable[..., RunningServer], catalog_dir: Path) -> None:
    """`localhost` resolves to ::1 first on most machines: the README's first command must serve it."""
    server = start_server(catalog_dir, host="[::]")
    with TailorClient(f"[::1]:{server.port}") as ipv6:
        assert ipv6.decide("s", "home_layout").action_id
    assert server.metric("tailor_rpcs_rejected_total", {"reason": "not_local"}) == 0


@pytest.mark.parametrize(
    ("peer", "address"),
    [
        ("ipv4:127.0.0.1:5000", "127.0.0.1"),
        ("ipv6:[::1]:5000", "::1"),
        ("ipv6:%5B::1%5D:5000", "::1"),  # as gRPC reports it
        ("ipv6:%5B::ffff:127.0.0.1%5D:5000", "127.0.0.1"),
        ("ipv6:[::ffff:127.0.0.1]:5000", "127.0.0.1"),
        ("ipv6:[fe80::1%25eth0]:5000", "fe80::1"),
        ("ipv4:10.1.2.3:443", "10.1.2.3"),
    ],
)
def test_peer_addresses_are_parsed(peer: str, address: str) -> None:
    assert str(_peer_address(peer)) == address
