"""State: one small interface per concern, with its in-memory and Redis implementations side by side.

- `sessions/`: per-session context (`SessionState`, the fold of behaviour events) and its stores.
- `decision_log/`: decisions waiting for rewards, the atomic reward join, the hand-off to the learner.
- `models/`: the models being served (`ModelRegistry`) and where snapshots live (files, or Redis).
- `catalogs/`: the catalog store: versions, history and the audit log, seeded by the catalog directory
  (files in the data directory; Redis next).
- `_files.py`: atomic, durable JSON files, for every embedded store.
- `_decide.py`: what one Decide reads and writes, in one round trip each on Redis (`DecideState`).
- `_redis.py`: Redis plumbing every Redis backend shares: hash-tagged keys, errors as UNAVAILABLE,
  Lua scripts on lean pipelines (`redis_pipeline`); `redis_connect` (one server or a Redis Cluster) and
  `redis_settings_problems`, the start-up check of the server's settings.

Each backend is chosen by the app wiring (`server._app`); the contract suites in `tests/state/` run every
interface against both. Imports: `server.core`, `server.catalogs`, `policies`; never the request path above.
"""

from ._decide import DecideState, EmbeddedDecideState, RedisDecideState
from ._files import read_json, write_json_atomic
from ._redis import close_pipelines as redis_close_pipelines
from ._redis import connect as redis_connect
from ._redis import pipeline as redis_pipeline
from ._redis import settings_problems as redis_settings_problems

__all__ = [
    "DecideState",
    "EmbeddedDecideState",
    "RedisDecideState",
    "read_json",
    "redis_close_pipelines",
    "redis_connect",
    "redis_pipeline",
    "redis_settings_problems",
    "write_json_atomic",
]
