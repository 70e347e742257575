"""Feature encoding into VW's text format.

Every decision is one multi-line VW example:

    shared |c device=mobile basket:2.5 |s <session intent features>
    |a id=grid style=grid columns:4
    |a id=carousel style=carousel columns:1

Namespace ``c`` holds the request context, ``s`` the session's intent features and ``a`` the action's
features and id; the policy interacts ``c`` and ``s`` with ``a`` so that who is shopping changes the
ranking. Text values become one-hot features ``key=value``; numbers become ``key:value``.

Numbers are written with 9 significant digits (``%.9g``): VW keeps features as float32, which 9 digits
represent exactly, so the example is the one ``repr`` would give VW, in about half the characters and
time.

Nothing a client sends may change the example's structure: the characters VW's text format gives
meaning to (``|``, ``:``, whitespace, control characters) are percent-escaped, as is ``%`` itself so
the escaping stays one-to-one, and ``=`` in keys so that ``key=value`` cannot be forged from another key.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from math import isfinite

CONTEXT_NAMESPACE = "c"
SESSION_NAMESPACE = "s"
ACTION_NAMESPACE = "a"

FeatureMap = Mapping[str, "str | float"]

# VW's text format gives meaning to "|", ":" and whitespace; control characters are escaped too, so no
# byte a client sends can end a token, a namespace or a line. "%" is escaped so the mapping stays 1:1.
_SPECIAL = {ord("%"): "%25", ord("|"): "%7C", ord(":"): "%3A", ord(" "): "%20"}
_SPECIAL.update({c: f"%{c:02X}" for c in (*range(32), 127)})
_VALUE_ESCAPES = dict(_SPECIAL)
_KEY_ESCAPES = {**_SPECIAL, ord("="): "%3D"}


# Feature names repeat across requests: escaping each once saves a translate per feature per request.
_KEY_CACHE: dict[str, str] = {}
_KEY_CACHE_SIZE = 65536


def escape_key(key: str) -> str:
    """Escape a feature key so it is one VW token that cannot contain ``=``."""
    escaped = _KEY_CACHE.get(key)
    if escaped is None:
        if len(_KEY_CACHE) >= _KEY_CACHE_SIZE:  # bounded: a client sending random names cannot grow it
            _KEY_CACHE.clear()
        escaped = _KEY_CACHE[key] = key.translate(_KEY_ESCAPES)
    return escaped


def escape_value(value: str) -> str:
    """Escape a text feature value so it is one VW token."""
    return value.translate(_VALUE_ESCAPES)


def encode_feature(key: str, value: str | float) -> str:
    """One feature as a VW token: ``key=value`` for text, ``key:value`` for a finite number."""
    if isinstance(value, str):
        return f"{escape_key(key)}={escape_value(value)}"
    if not math.isfinite(value):
        raise ValueError(f"feature {key!r} is not a finite number: {value}")
    return f"{escape_key(key)}:{value:.9g}"


def encode_features(features: Iterable[tuple[str, str | float]]) -> str:
    """Space-joined VW tokens for (key, value) pairs.

    The hot path of every decision (request context and session features): `encode_feature` inlined,
    escaped names from the cache, so a feature costs one dict lookup and one f-string."""
    parts: list[str] = []
    append = parts.append
    cache = _KEY_CACHE
    for key, value in features:
        name = cache.get(key)
        if name is None:
            name = escape_key(key)
        if value.__class__ is str:
            append(f"{name}={value.translate(_VALUE_ESCAPES)}")
        elif isfinite(value):  # type: ignore[arg-type]
            append(f"{name}:{value:.9g}")
        else:
            raise ValueError(f"feature {key!r} is not a finite number: {value}")
    return " ".join(parts)


def action_line(action_id: str, features: FeatureMap) -> str:
    """The VW line for one candidate action: its id as a feature, then its own features."""
    body = encode_features(features.items())
    head = f"|{ACTION_NAMESPACE} id={escape_value(action_id)}"
    return f"{head} {body}" if body else head


def shared_line(context: str, session: str = "") -> str:
    """The VW shared line from already-encoded context and session feature text."""
    line = f"shared |{CONTEXT_NAMESPACE} {context}"
    if session:
        line += f" |{SESSION_NAMESPACE} {session}"
    return line
