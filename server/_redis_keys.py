"""Redis key names. Every key of one session (or one decision shard) carries the same hash tag, so a
Redis Cluster keeps them in one slot and Lua scripts may touch them together."""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

import redis

from ._errors import Unavailable

_TAG_ESCAPES = str.maketrans({"%": "%25", "{": "%7B", "}": "%7D"})


def hash_tag(value: str) -> str:
    """`{value}` with braces escaped: a client id can never end the tag early or start another."""
    return "{" + value.translate(_TAG_ESCAPES) + "}"


class SessionKeys:
    """The keys of one session: aggregates, cart, categories, seen event ids, open decisions, shown."""

    __slots__ = ("cart", "categories", "decisions", "main", "seen", "shown")

    def __init__(self, prefix: str, session_id: str) -> None:
        base = f"{prefix}:s:{hash_tag(session_id)}"
        self.main = base
        self.cart = base + ":cart"
        self.categories = base + ":cat"
        self.seen = base + ":seen"
        self.decisions = base + ":dec"
        self.shown = base + ":shown"

    def all(self) -> list[str]:
        return [self.main, self.cart, self.categories, self.seen, self.decisions, self.shown]


P = ParamSpec("P")
T = TypeVar("T")


def unavailable_on_error(method: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, Coroutine[Any, Any, T]]:
    """Turn Redis connection and server errors into `Unavailable` (UNAVAILABLE to clients; the decision
    path fails open on it), so nothing above the stores depends on redis-py's exception tree."""

    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(*args, **kwargs)
        except (redis.RedisError, OSError) as err:
            raise Unavailable(f"state store unavailable: {type(err).__name__}") from err

    return wrapper
