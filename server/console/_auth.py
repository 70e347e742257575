"""Who is using the console: sign-in with an API key, the signed session cookie, CSRF tokens, the Host allow-list.

- With `--api-keys`, a person signs in with a key holding `observe` (read), `session` (the session inspector) or
  `admin` (edits). The session cookie (signed with the console secret, HttpOnly, SameSite=Strict, Secure when the
  console serves TLS) holds the key's digest, never the key; every request looks the digest up in the current key
  file, so a key removed from it signs its holder out at once.
- Without keys (protected mode), the console serves callers on this machine only (loopback), as admin ("local"):
  unlike gRPC it ignores `local_networks` and `--insecure`, since a browser session is admin over everything.
- Every form carries the session's CSRF token; a POST without the right one is refused (403).
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import time
from dataclasses import dataclass

from starlette.requests import Request

from server.api import KeyRing, Role

SESSION_SECONDS = 8 * 3600


@dataclass(frozen=True, slots=True)
class Viewer:
    """The person behind a request: the key's name (or `local`) and its roles."""

    name: str
    roles: frozenset[Role]

    def can(self, role: Role) -> bool:
        return "admin" in self.roles or role in self.roles


def is_loopback(request: Request) -> bool:
    host = request.client.host if request.client is not None else ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback  # an IPv4 caller of a console bound to "::"
    return address.is_loopback


def viewer(request: Request, keys: KeyRing | None) -> Viewer | None:
    """The signed-in viewer, or None (sign in first; without keys: not on this machine)."""
    if keys is None:
        return Viewer("local", frozenset({"admin"})) if is_loopback(request) else None
    digest = request.session.get("key")
    since = request.session.get("since")
    if not isinstance(digest, str) or not isinstance(since, (int, float)) or time.time() - since > SESSION_SECONDS:
        request.session.clear()  # never signed in, or signed in too long ago: a copied cookie ages out too
        return None
    key = keys.by_digest(digest)
    if key is None:  # removed from the key file since: signed out
        request.session.pop("key", None)
        return None
    return Viewer(key.name, frozenset(key.roles))


def csrf_token(request: Request) -> str:
    token = request.session.get("csrf")
    if not isinstance(token, str):
        token = request.session["csrf"] = secrets.token_urlsafe(24)
    return token


def csrf_ok(request: Request, submitted: object) -> bool:
    token = request.session.get("csrf")
    return isinstance(token, str) and isinstance(submitted, str) and hmac.compare_digest(token, submitted)
