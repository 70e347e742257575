"""Learning: rewards joined to decisions, and joined decisions turned into `vw.learn` calls.

- `RewardJoiner`: validates and counts rewards (explicit, or derived by catalog rules) and joins them
  through the decision log.
- `Learner`: the embedded in-process learner, in short slices on the event loop.
- `ActionSeries`: the console's over-time series (decisions and rewards per action, value estimates), kept by
  whichever learner sees every decision.
- `SharedLearner` (`tailor learn`): Redis mode's learners, which share the decision points by lease
  (`DecisionPointLeases`), read their learn streams, and publish models with the stream offsets they cover
  (exactly once across failover and across leases moving).

Imports: `server.state`, `server.catalogs`, `server.core`, `policies`.
"""

from ._evidence import EvidenceRecorder
from ._joiner import RewardJoiner
from ._learner import Learner, LearnItem, learn_example
from ._lease import DecisionPointLeases
from ._series import BUCKET_SECONDS, SERIES_FORMAT, ActionSeries, Bucket, read_from_redis, summed
from ._shared import SharedLearner

__all__ = [
    "BUCKET_SECONDS",
    "SERIES_FORMAT",
    "ActionSeries",
    "Bucket",
    "DecisionPointLeases",
    "EvidenceRecorder",
    "LearnItem",
    "Learner",
    "RewardJoiner",
    "SharedLearner",
    "learn_example",
    "read_from_redis",
    "summed",
]
