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

import functools
import math
import struct
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


def _f32(x: float) -> float:
    """x rounded to the nearest float32 (as a Python float)."""
    return float(struct.unpack("f", struct.pack("f", x))[0])


def _pow10_table() -> tuple[list[float], list[float]]:
    """VW's `fast_pow10` lookup tables: 10^n by repeated float32 products, 10^-n by repeated float32 quotients."""
    up, down = [1.0], [1.0]
    for _ in range(38):  # FLT_MAX_10_EXP
        up.append(_f32(up[-1] * 10.0))
    for _ in range(37):  # -FLT_MIN_10_EXP
        down.append(_f32(down[-1] / 10.0))
    return up, down


_POW10_UP, _POW10_DOWN = _pow10_table()


@functools.lru_cache(maxsize=1 << 16)
def vw_text_float(text: str) -> float:
    """The float32 VW's text parser reads from `text` (its `parseFloat`), as a Python float.

    VW parses the numbers of a text example with its own fast routine: the digits accumulate in float32 and
    are scaled by a float32 power of ten, which can land one float32 step away from the correctly rounded
    value a JSON parser gives. The decision log writes numbers as this value, so VW reading a line back as
    JSON learns from exactly the numbers it learned from as text. (All operations below are exact in a
    Python float before the rounding to float32, so each matches one C++ float operation.)
    """
    p, n = 0, len(text)
    while p < n and text[p] == " ":
        p += 1
    sign = 1.0
    if p < n and text[p] == "-":
        sign, p = -1.0, p + 1
    acc = 0.0
    while p < n and "0" <= text[p] <= "9":
        acc = _f32(_f32(_f32(acc * 10.0) + ord(text[p])) - 48.0)  # acc * 10 + *p++ - '0'
        p += 1
    decimals = 0
    if p < n and text[p] == ".":
        p += 1
        while p < n and "0" <= text[p] <= "9":
            if decimals < 35:
                acc = _f32(_f32(acc * 10.0) + (ord(text[p]) - 48))
                decimals += 1
            p += 1
    exponent = 0
    if p < n and text[p] in "eE":
        p += 1
        exponent_sign = 1
        if p < n and text[p] == "-":
            exponent_sign, p = -1, p + 1
        while p < n and "0" <= text[p] <= "9":
            exponent = exponent * 10 + ord(text[p]) - 48
            p += 1
        exponent *= exponent_sign
    if p != n:  # not VW's easy case: it falls back to strtof, correctly rounded
        return _f32(float(text))
    scale = (exponent - decimals + 128) % 256 - 128  # static_cast<int8_t>
    if scale > 38:
        power = math.inf
    elif scale < -37:
        power = 0.0
    else:
        power = _POW10_UP[scale] if scale >= 0 else _POW10_DOWN[-scale]
    return sign * _f32(acc * power)
