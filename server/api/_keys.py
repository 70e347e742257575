"""API keys: the key file, the roles, and who may call what.

The key file (`--api-keys FILE`) holds digests only, never a key:

    keys:
      - {name: storefront, sha256: <hex SHA-256 of the key>, roles: [decide]}
      - {name: ops, sha256: ..., roles: [admin]}

`tailor keys new --name NAME --role ROLE...` makes a key and prints it once, with its entry. Clients send
`authorization: Bearer <key>`. The file is re-read on SIGHUP and when it changes on disk (Kubernetes
updates a mounted Secret without a signal); a file that does not validate keeps the keys already loaded.

`METHOD_ROLES` is the role map: every RPC and the role it needs (`admin` has every role). A method not in
the map needs `admin`, so an RPC added without a thought for its role is closed, not open.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

Role = Literal["decide", "session", "observe", "admin"]
ROLES: tuple[Role, ...] = ("decide", "session", "observe", "admin")

_DECISIONS = "/tailor.v1.DecisionService/"
_ADMIN = "/tailor.v1.AdminService/"
#: The role each RPC needs. Health is open (probes) and never reaches the map; reflection needs any key.
METHOD_ROLES: dict[str, Role] = {
    _DECISIONS + "Decide": "decide",
    _DECISIONS + "TrackEvents": "decide",
    _DECISIONS + "ReportRewards": "decide",
    _DECISIONS + "Activate": "decide",
    _DECISIONS + "GetSession": "session",
    _DECISIONS + "DeleteSession": "session",
    # AdminService: reads with `observe`; everything else (changes, model export) needs `admin`.
    _ADMIN + "ListDecisionPoints": "observe",
    _ADMIN + "GetDecisionPoint": "observe",
    _ADMIN + "ListCatalogVersions": "observe",
    _ADMIN + "ListAuditEvents": "observe",
    _ADMIN + "PutDecisionPoint": "admin",
    _ADMIN + "DeleteDecisionPoint": "admin",
    _ADMIN + "RollbackDecisionPoint": "admin",
    _ADMIN + "ExportModel": "admin",
    _ADMIN + "ImportModel": "admin",
    _ADMIN + "ResetModel": "admin",
}
#: Served with any valid key (and, in protected mode, to local callers): describes the API, changes nothing.
ANY_KEY_PREFIXES = ("/grpc.reflection.",)
#: Never guarded: kubelet and load balancers probe without credentials.
OPEN_PREFIXES = ("/grpc.health.v1.Health/",)

KEY_PREFIX = "tlr_"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class KeyEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="who holds the key; shown in logs and audit events, never the key itself")
    sha256: str = Field(description="lowercase hex SHA-256 of the key")
    roles: list[Role] = Field(min_length=1, description="decide, session, observe, admin")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("a key name is 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit")
        return value

    @field_validator("sha256")
    @classmethod
    def _digest(cls, value: str) -> str:
        if not _HEX64.match(value):
            raise ValueError(
                "give the key's SHA-256 as 64 lowercase hex digits (`tailor keys new` prints the entry), never the key"
            )
        return value


class KeyFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    keys: list[KeyEntry] = Field(description="the API keys this server accepts")

    @field_validator("keys")
    @classmethod
    def _unique(cls, keys: list[KeyEntry]) -> list[KeyEntry]:
        names = [k.name for k in keys]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"key name {name!r} appears twice")
        digests = [k.sha256 for k in keys]
        if len(set(digests)) != len(digests):
            raise ValueError("two entries have the same digest (the same key)")
        return keys


class KeyFileError(Exception):
    """The key file is missing or invalid; the message names the file and every problem."""


@dataclass(frozen=True, slots=True)
class Key:
    name: str
    roles: frozenset[Role]

    def allows(self, role: Role) -> bool:
        return role in self.roles or "admin" in self.roles


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def load_key_file(path: Path) -> KeyFile:
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as err:
        raise KeyFileError(f"{path}: cannot read the key file: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise KeyFileError(f"{path}: not valid YAML: {err}") from None
    try:
        return KeyFile.model_validate(doc)
    except ValidationError as err:
        problems = [f"{path}: {'.'.join(map(str, e['loc'])) or '(file)'}: {e['msg']}" for e in err.errors()]
        raise KeyFileError("\n".join(problems)) from None


def _signature(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)  # follows symlinks: a Kubernetes Secret update swaps the `..data` link
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


class KeyRing:
    """The keys a server accepts, re-read from their file when asked or when it changed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._by_digest: dict[bytes, Key] = {}
        self._signature: tuple[int, int, int] | None = None
        self.reload()

    def __len__(self) -> int:
        return len(self._by_digest)

    def reload(self) -> int:
        """Read the file; raises KeyFileError (keeping the loaded keys) if it does not validate."""
        signature = _signature(self.path)
        loaded = load_key_file(self.path)
        self._by_digest = {bytes.fromhex(k.sha256): Key(k.name, frozenset(k.roles)) for k in loaded.keys}
        self._signature = signature
        return len(self._by_digest)

    def changed(self) -> bool:
        """Whether the file on disk is not the one loaded (checked by polling)."""
        return _signature(self.path) != self._signature

    def authenticate(self, key: str) -> Key | None:
        """The key's entry, or None.

        A presented key is never compared with a stored one as text: it is hashed, and the digest looked up.
        How long that takes can depend only on the digest of what was presented, and steering a digest
        towards a stored one is a preimage attack on SHA-256, so timing reveals nothing about any key (the
        same reasoning as comparing digests with `hmac.compare_digest`, without a loop over every key)."""
        return self._by_digest.get(hashlib.sha256(key.encode()).digest())

    def by_digest(self, hex_digest: str) -> Key | None:
        """The entry of a key known by its digest (the console's session holds the digest, never the key)."""
        try:
            return self._by_digest.get(bytes.fromhex(hex_digest))
        except ValueError:
            return None


def new_key() -> str:
    """A fresh key: 256 random bits, URL-safe, with a prefix that secret scanners can match."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_entry_yaml(name: str, key: str, roles: list[Role]) -> str:
    entry = KeyEntry(name=name, sha256=digest(key), roles=roles)
    return yaml.safe_dump({"keys": [entry.model_dump()]}, sort_keys=False)
