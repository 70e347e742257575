"""The decision log: served decisions with their exact features and probabilities, joined to rewards.

`DecisionLog` is the interface (the join lives here so a backend can make it atomic); `InMemoryDecisionLog`
is the embedded default, `RedisDecisionLog` shards decisions under hash tags and hands them to the learner
on streams, exactly once.

Imports: `server.core` and `server.state._redis`; nothing above state.
"""

from ._base import Aggregation, Arm, Decision, DecisionLog, DecisionRecord, JoinStatus, LearnSink, Source
from ._memory import InMemoryDecisionLog
from ._redis import LAYOUT, LearnEntry, RedisDecisionLog, ShardBacklog

__all__ = [
    "LAYOUT",
    "Aggregation",
    "Arm",
    "Decision",
    "DecisionLog",
    "DecisionRecord",
    "InMemoryDecisionLog",
    "JoinStatus",
    "LearnEntry",
    "LearnSink",
    "RedisDecisionLog",
    "ShardBacklog",
    "Source",
]
