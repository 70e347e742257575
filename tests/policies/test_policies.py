"""The policies package alone: feature encoding checked by a real VW parser, seeded sampling, costs, VW policies."""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from vowpalwabbit import Workspace

from policies import (
    Bag,
    Cover,
    EpsilonGreedy,
    Exploration,
    LearningSpec,
    Softmax,
    SquareCB,
    VWPolicy,
    action_line,
    encode_feature,
    encode_features,
    escape_key,
    escape_value,
    reward_to_cost,
    sample_index,
    shared_line,
    uniform_from_id,
)

CONSTANT_NAMESPACE = 128  # VW adds its bias feature to every example in this namespace

# Strings that would change a VW example's structure if they reached it unescaped.
HOSTILE = [
    "x |a injected",
    "x |s z:3",
    "a:b",
    "a b",
    "tab\there",
    "line\nbreak",
    "carriage\rreturn",
    "|",
    ":",
    " ",
    "shared |c",
    "100%",
    "k=v",
]


@pytest.fixture(scope="module")
def vw_parser() -> Iterator[Workspace]:
    workspace = Workspace("--cb_explore_adf --quiet")
    yield workspace
    workspace.finish()


def parse(vw: Workspace, lines: list[str]) -> list[dict[str, list[float]]]:
    """Per example, each non-constant namespace mapped to its feature values, as VW itself parsed them."""
    examples = vw.parse(lines)
    parsed = [
        {
            chr(ex.namespace(i)): [ex.feature_weight(i, j) for j in range(ex.num_features_in(i))]
            for i in range(ex.num_namespaces())
            if ex.namespace(i) != CONSTANT_NAMESPACE
        }
        for ex in examples
    ]
    vw.finish_example(examples)
    return parsed


# --- feature encoding ---------------------------------------------------------------------------------


def test_text_features_are_one_hot_and_numbers_are_weighted() -> None:
    assert encode_feature("device", "mobile") == "device=mobile"
    assert encode_feature("basket", 2.5) == "basket:2.5"
    assert encode_features([("device", "mobile"), ("basket", 2.5)]) == "device=mobile basket:2.5"


def test_the_parse_check_detects_injection_when_nothing_is_escaped(vw_parser: Workspace) -> None:
    """Guards the tests below: an unescaped hostile value really does forge a namespace."""
    assert parse(vw_parser, ["shared |c k=x |a injected", "|a id=grid"])[0].keys() == {"c", "a"}


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_text_cannot_change_the_example_structure(vw_parser: Workspace, hostile: str) -> None:
    context = encode_features([("k", hostile), (hostile, "v"), (hostile, 2.0)])
    session = encode_features([(hostile, hostile)])
    lines = [shared_line(context, session), action_line(hostile, {hostile: hostile, "n": 3.0})]

    shared, action = parse(vw_parser, lines)

    assert shared == {"c": [1.0, 1.0, 2.0], "s": [1.0]}
    assert action == {"a": [1.0, 1.0, 3.0]}


def test_escaping_is_one_to_one() -> None:
    assert escape_value("a:b") != escape_value("a%3Ab")
    assert escape_key("a=b") != escape_key("a%3Db")
    assert encode_feature("a", "b=c") != encode_feature("a=b", "c")

    alphabet = ["a", "3", "A", "%", ":", "|", " ", "\t", "\n", "="]
    words = ["".join(w) for n in range(4) for w in itertools.product(alphabet, repeat=n)]
    assert len({escape_value(w) for w in words}) == len(words)
    assert len({escape_key(w) for w in words}) == len(words)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_are_rejected(value: float) -> None:
    with pytest.raises(ValueError, match="price"):
        encode_feature("price", value)


# --- seeded sampling ----------------------------------------------------------------------------------


def test_sampling_is_fixed_by_the_event_id() -> None:
    pmf = [0.25, 0.25, 0.25, 0.25]
    draws = {f"event-{i}": sample_index(pmf, f"event-{i}") for i in range(200)}

    assert all(sample_index(pmf, event_id) == index for event_id, index in draws.items())
    assert set(draws.values()) == {0, 1, 2, 3}
    assert all(0.0 <= uniform_from_id(event_id) < 1.0 for event_id in draws)


def test_sampling_never_picks_a_zero_probability_action() -> None:
    for pmf in ([0.0, 0.5, 0.0, 0.5, 0.0], [0.0, 0.0, 1.0], [0.3, 0.7, 0.0], [1.0, 0.0]):
        picked = {sample_index(pmf, f"event-{i}") for i in range(2000)}
        assert picked == {i for i, p in enumerate(pmf) if p > 0}


def test_sampling_follows_the_pmf() -> None:
    pmf = [0.5, 0.3, 0.15, 0.05]
    draws = 20_000

    counts = Counter(sample_index(pmf, f"evt-{i}") for i in range(draws))

    chi_square = sum((counts[i] - draws * p) ** 2 / (draws * p) for i, p in enumerate(pmf))
    assert chi_square < 16.27  # 3 degrees of freedom, p = 0.001
    for i, p in enumerate(pmf):
        assert counts[i] / draws == pytest.approx(p, abs=0.01)


# --- reward to cost -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("low", "high"), [(0.0, 1.0), (-5.0, 10.0), (100.0, 250.0)])
def test_reward_range_maps_onto_vw_cost_bounds(low: float, high: float) -> None:
    rewards = [low + (high - low) * k / 20 for k in range(21)]
    costs = [reward_to_cost(r, low, high) for r in rewards]

    assert costs[0] == 0.0
    assert costs[-1] == -1.0
    assert all(a > b for a, b in itertools.pairwise(costs))
    assert reward_to_cost(low - 1.0, low, high) == 0.0
    assert reward_to_cost(high + 1.0, low, high) == -1.0


# --- VW policies --------------------------------------------------------------------------------------

LAYOUTS = ["grid", "carousel", "editorial", "deals_first"]
ACTIONS = [action_line(a, {"style": a, "density": float(4 * (i + 1))}) for i, a in enumerate(LAYOUTS)]
MOBILE = shared_line(encode_features([("device", "mobile"), ("basket", 2.5)]))
DESKTOP = shared_line(encode_features([("device", "desktop"), ("basket", 0.0)]))
STRATEGIES: list[Exploration] = [SquareCB(), EpsilonGreedy(epsilon=0.2), Bag(size=3), Cover(size=3), Softmax()]


@pytest.fixture
def policy() -> Iterator[VWPolicy]:
    vw = VWPolicy(LearningSpec())
    yield vw
    vw.close()


def teach(policy: VWPolicy, shared: str, best: int, rounds: int = 30) -> None:
    """Uniformly logged feedback where action `best` earns the top reward and the others nothing."""
    for _ in range(rounds):
        for chosen in range(len(ACTIONS)):
            cost = reward_to_cost(1.0 if chosen == best else 0.0, 0.0, 1.0)
            policy.learn(shared, ACTIONS, chosen, cost, 1.0 / len(ACTIONS))


def test_predict_gives_one_probability_per_action_in_order(policy: VWPolicy) -> None:
    teach(policy, MOBILE, best=1)

    pmf = policy.predict(MOBILE, ACTIONS)
    reversed_pmf = policy.predict(MOBILE, ACTIONS[::-1])

    assert len(pmf) == len(ACTIONS)
    assert sum(pmf) == pytest.approx(1.0)
    assert all(p >= 0.0 for p in pmf)
    assert max(range(len(pmf)), key=pmf.__getitem__) == 1
    assert reversed_pmf == pytest.approx(pmf[::-1])


def test_learning_raises_the_rewarded_actions_probability_for_its_context(policy: VWPolicy) -> None:
    mobile_before = policy.predict(MOBILE, ACTIONS)
    desktop_before = policy.predict(DESKTOP, ACTIONS)

    teach(policy, MOBILE, best=2)
    teach(policy, DESKTOP, best=0)
    mobile_after = policy.predict(MOBILE, ACTIONS)
    desktop_after = policy.predict(DESKTOP, ACTIONS)

    assert mobile_after[2] > mobile_before[2] + 0.3
    assert desktop_after[0] > desktop_before[0] + 0.3
    assert max(range(len(ACTIONS)), key=mobile_after.__getitem__) == 2
    assert max(range(len(ACTIONS)), key=desktop_after.__getitem__) == 0


@pytest.mark.parametrize("exploration", STRATEGIES, ids=lambda e: e.algorithm)
def test_saved_model_reloads_with_the_same_predictions_and_learning_state(
    tmp_path: Path, exploration: Exploration
) -> None:
    spec = LearningSpec(exploration=exploration)
    original = VWPolicy(spec)
    teach(original, MOBILE, best=1, rounds=5)
    original.save(tmp_path / "model.vw")

    reloaded = VWPolicy(spec, model_file=tmp_path / "model.vw")
    same_now = reloaded.predict(MOBILE, ACTIONS) == pytest.approx(original.predict(MOBILE, ACTIONS))
    teach(original, DESKTOP, best=3, rounds=3)
    teach(reloaded, DESKTOP, best=3, rounds=3)
    same_after_more_learning = reloaded.predict(DESKTOP, ACTIONS) == pytest.approx(original.predict(DESKTOP, ACTIONS))
    original.close()
    reloaded.close()

    assert same_now
    assert same_after_more_learning


@pytest.mark.parametrize("exploration", STRATEGIES, ids=lambda e: e.algorithm)
def test_every_exploration_strategy_builds_a_working_policy(exploration: Exploration) -> None:
    spec = LearningSpec(exploration=exploration)
    policy = VWPolicy(spec)
    teach(policy, MOBILE, best=1, rounds=3)
    pmf = policy.predict(MOBILE, ACTIONS)
    policy.close()

    assert exploration.vw_args() in spec.vw_args()
    assert policy.examples_learned == 3 * len(ACTIONS)
    assert len(pmf) == len(ACTIONS)
    assert sum(pmf) == pytest.approx(1.0)


def test_epsilon_greedy_keeps_exploring_every_action() -> None:
    policy = VWPolicy(LearningSpec(exploration=EpsilonGreedy(epsilon=0.2)))
    teach(policy, MOBILE, best=1)
    pmf = policy.predict(MOBILE, ACTIONS)
    policy.close()

    assert min(pmf) == pytest.approx(0.2 / len(ACTIONS))
    assert max(pmf) == pytest.approx(1 - 0.2 + 0.2 / len(ACTIONS))
