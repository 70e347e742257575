"""TLS for the gRPC port: the server certificate, and the client CA when client certificates are required.

gRPC asks `fetch` before every new connection's handshake; it answers a new configuration when the files
changed on disk (or SIGHUP asked for a re-read) and the new pair is valid, else None (keep the current
one). Connections already open keep their session, so a rotation never drops an in-flight call. A pair
that does not load (a certificate renewed before its key, a typo) is refused, counted and logged, and the
previous certificate stays in use.
"""

from __future__ import annotations

import logging
import os
import ssl
from pathlib import Path

import grpc

from server.core import Metrics

log = logging.getLogger("tailor.tls")


class TLSError(Exception):
    """The certificate, key or client CA cannot be used; the message says which file and why."""


def _signature(paths: list[Path]) -> tuple[tuple[int, int, int] | None, ...]:
    out: list[tuple[int, int, int] | None] = []
    for p in paths:
        try:
            st = os.stat(p)
        except OSError:
            out.append(None)
        else:
            out.append((st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(out)


class ServerCertificates:
    def __init__(self, cert: Path, key: Path, client_ca: Path | None, metrics: Metrics) -> None:
        self.cert, self.key, self.client_ca = cert, key, client_ca
        self.metrics = metrics
        self._paths = [p for p in (cert, key, client_ca) if p is not None]
        self._signature = _signature(self._paths)
        self._reload_requested = False
        self._config = self._load()

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            self._config,
            self.fetch,  # type: ignore[arg-type]  # the stubs miss that None means "no change"
            require_client_authentication=self.client_ca is not None,
        )

    def request_reload(self) -> None:
        """SIGHUP: re-read the files before the next handshake, changed or not."""
        self._reload_requested = True

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """Called by gRPC before each new connection's handshake (on one of its threads)."""
        signature = _signature(self._paths)
        if not self._reload_requested and signature == self._signature:
            return None
        self._reload_requested = False
        self._signature = signature
        try:
            config = self._load()
        except TLSError as err:
            self.metrics.credential_reloads.labels("tls", "error").inc()
            log.error(
                "TLS certificate reload failed; keeping the current certificate: %s",
                err,
                extra={"event": "credentials_reload_failed", "what": "tls"},
            )
            return None
        self._config = config
        self.metrics.credential_reloads.labels("tls", "ok").inc()
        log.info("TLS certificate reloaded from %s", self.cert, extra={"event": "credentials_reloaded", "what": "tls"})
        return config

    def _load(self) -> grpc.ServerCertificateConfiguration:
        try:
            chain, key = self.cert.read_bytes(), self.key.read_bytes()
            ca = self.client_ca.read_bytes() if self.client_ca is not None else None
        except OSError as err:
            raise TLSError(f"{err.filename}: {err.strerror}") from None
        # gRPC reports a bad pair only at the next handshake, as a failed connection; the standard library
        # checks that the key matches the certificate now, while there is a good one to keep.
        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(self.cert, self.key)
            if self.client_ca is not None:
                ssl.create_default_context(cafile=str(self.client_ca))
        except (ssl.SSLError, OSError, ValueError) as err:
            raise TLSError(
                f"{self.cert} / {self.key}{f' / {self.client_ca}' if self.client_ca else ''}: {err}"
            ) from None
        return grpc.ssl_server_certificate_configuration([(key, chain)], root_certificates=ca)
