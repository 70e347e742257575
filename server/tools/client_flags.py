"""The flags every client command shares (`tailor simulate --target ...`): API key and TLS.

`--api-key` (or TAILOR_API_KEY) is sent as `authorization: Bearer`; `--tls-ca FILE` turns TLS on and trusts
that CA (PEM); `--tls-cert`/`--tls-key` present a client certificate to a server that requires one (mTLS).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

import grpc


def add_client_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--api-key", help="API key sent as `authorization: Bearer` (default: $TAILOR_API_KEY)")
    parser.add_argument("--tls-ca", type=Path, help="connect with TLS, trusting this CA (PEM)")
    parser.add_argument("--tls-cert", type=Path, help="client certificate (PEM) for a server that requires one")
    parser.add_argument("--tls-key", type=Path, help="private key (PEM) of --tls-cert")


@dataclass(frozen=True, slots=True)
class ClientCredentials:
    api_key: str | None = None
    ca: bytes | None = None
    cert: bytes | None = None
    key: bytes | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ClientCredentials:
        """Read the flags (and TAILOR_API_KEY); raises ValueError naming a flag that cannot be used."""
        if (args.tls_cert is None) != (args.tls_key is None):
            raise ValueError("give --tls-cert and --tls-key together")
        files: dict[str, bytes | None] = {}
        for flag in ("tls_ca", "tls_cert", "tls_key"):
            path: Path | None = getattr(args, flag)
            try:
                files[flag] = path.read_bytes() if path is not None else None
            except OSError as err:
                raise ValueError(f"--{flag.replace('_', '-')} {path}: {err.strerror}") from None
        key = args.api_key or os.environ.get("TAILOR_API_KEY") or None
        return cls(key, files["tls_ca"], files["tls_cert"], files["tls_key"])

    @property
    def metadata(self) -> tuple[tuple[str, str], ...] | None:
        return (("authorization", f"Bearer {self.api_key}"),) if self.api_key else None

    def aio_channel(self, target: str) -> grpc.aio.Channel:
        if self.ca is None and self.cert is None:
            return grpc.aio.insecure_channel(target)
        return grpc.aio.secure_channel(target, grpc.ssl_channel_credentials(self.ca, self.key, self.cert))
