"""Session context state: `SessionState` folds a shopper's behaviour events into small bounded aggregates.

`SessionStore` is the interface; `InMemorySessionStore` (embedded default: LRU, idle TTL, capacity) and
`RedisSessionStore` (a hash per session, folded by Lua scripts that mirror `SessionState.apply`) implement it.

Imports: `server.core` and `server.state._redis`; nothing above state.
"""

from ._base import MAX_CATEGORIES, MAX_OPEN_DECISIONS, OpenDecision, SessionState, SessionStore
from ._memory import InMemorySessionStore
from ._redis import RedisSessionStore

__all__ = [
    "MAX_CATEGORIES",
    "MAX_OPEN_DECISIONS",
    "InMemorySessionStore",
    "OpenDecision",
    "RedisSessionStore",
    "SessionState",
    "SessionStore",
]
