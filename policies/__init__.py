"""Contextual-bandit policies on Vowpal Wabbit: feature encoding, exploration, sampling, learning,
off-policy estimates.

Knows nothing about gRPC, Redis or the server; it can be tested and benchmarked alone.
"""

from ._cost import COST_BOUNDS_ARGS, reward_to_cost
from ._encoding import (
    action_line,
    encode_feature,
    encode_features,
    escape_key,
    escape_value,
    shared_line,
    vw_text_float,
)
from ._estimators import Estimate, OffPolicyEvaluation, difference_interval, mean_interval
from ._exploration import Bag, Cover, EpsilonGreedy, Exploration, Softmax, SquareCB
from ._floor import apply_floor
from ._sampling import in_holdout, sample_index, uniform_from_id
from ._vw import (
    DEFAULT_IGNORE_LINEAR,
    DEFAULT_INTERACTIONS,
    LEGACY_FLAGS,
    LEGACY_IGNORE_LINEAR,
    LEGACY_INTERACTIONS,
    NAMESPACES,
    BuiltWith,
    DefaultedFlags,
    LearningSpec,
    VWPolicy,
    check_ignore_linear,
    check_interactions,
    recorded_flags,
)

__all__ = [
    "COST_BOUNDS_ARGS",
    "DEFAULT_IGNORE_LINEAR",
    "DEFAULT_INTERACTIONS",
    "LEGACY_FLAGS",
    "LEGACY_IGNORE_LINEAR",
    "LEGACY_INTERACTIONS",
    "NAMESPACES",
    "Bag",
    "BuiltWith",
    "Cover",
    "DefaultedFlags",
    "EpsilonGreedy",
    "Estimate",
    "Exploration",
    "LearningSpec",
    "OffPolicyEvaluation",
    "Softmax",
    "SquareCB",
    "VWPolicy",
    "action_line",
    "apply_floor",
    "check_ignore_linear",
    "check_interactions",
    "difference_interval",
    "encode_feature",
    "encode_features",
    "escape_key",
    "escape_value",
    "in_holdout",
    "mean_interval",
    "recorded_flags",
    "reward_to_cost",
    "sample_index",
    "shared_line",
    "uniform_from_id",
    "vw_text_float",
]
