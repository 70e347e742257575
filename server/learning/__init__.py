"""Learning: rewards joined to decisions, and joined decisions turned into `vw.learn` calls.

- `RewardJoiner`: validates and counts rewards (explicit, or derived by catalog rules) and joins them
  through the decision log.
- `Learner`: the embedded in-process learner, in short slices on the event loop.
- `SharedLearner` (`tailor learn`): Redis mode's learner, which holds a `LeaderLease`, reads the learn
  streams, and publishes models with the stream offsets they cover (exactly once across failover).

Imports: `server.state`, `server.catalogs`, `server.core`, `policies`.
"""

from ._evidence import EvidenceRecorder
from ._joiner import RewardJoiner
from ._learner import Learner, LearnItem, learn_example
from ._lease import LeaderLease
from ._shared import SharedLearner

__all__ = ["EvidenceRecorder", "LeaderLease", "LearnItem", "Learner", "RewardJoiner", "SharedLearner", "learn_example"]
