"""Models: the VW policy served per decision point, and where its snapshots live.

`ModelRegistry` holds the served models (one `ServedModel` per decision point, versioned); it opens and
saves them through a `ModelStore`: `FileModelStore` (snapshots in the data directory, embedded) or
`FollowedModelStore` (Redis-mode replicas, which take models from `RedisModelStore`'s publications).

Imports: `server.catalogs`, `server.core`, `policies`; nothing above state.
"""

from ._actions import ACTIONS_FORMAT, ESTABLISHED, LearnedActions
from ._files import FileModelStore, FollowedModelStore
from ._redis import (
    COMMAND_FORMAT,
    COMMAND_GRACE_SECONDS,
    DecisionLines,
    ModelCommand,
    PublishedModel,
    RedisModelStore,
    Snapshot,
    policy_bytes,
    policy_from_bytes,
)
from ._registry import ModelRegistry, ModelStore, ServedModel

__all__ = [
    "ACTIONS_FORMAT",
    "COMMAND_FORMAT",
    "COMMAND_GRACE_SECONDS",
    "ESTABLISHED",
    "DecisionLines",
    "FileModelStore",
    "FollowedModelStore",
    "LearnedActions",
    "ModelCommand",
    "ModelRegistry",
    "ModelStore",
    "PublishedModel",
    "RedisModelStore",
    "ServedModel",
    "Snapshot",
    "policy_bytes",
    "policy_from_bytes",
]
