"""A Vowpal Wabbit ``cb_explore_adf`` policy on the raw pylibvw call path.

``Workspace.predict(list)`` re-joins, re-splits and wraps every line in Python objects; calling
``_parse`` + ``predict_multi`` + ``_finish_example_multi_ex`` directly is about 5x faster for ten
actions on this hardware (benchmarks/README.md). A VW workspace is not thread-safe and pylibvw holds the
GIL, so one policy is driven from one thread: the server's event loop both predicts and learns.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from math import floor, isfinite
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from vowpalwabbit import pyvw

from ._cost import COST_BOUNDS_ARGS
from ._encoding import ACTION_NAMESPACE, CONTEXT_NAMESPACE, SESSION_NAMESPACE
from ._exploration import Exploration, SquareCB

log = logging.getLogger("tailor.policies")
_vw = pyvw.pylibvw.vw

NAMESPACES = (CONTEXT_NAMESPACE, SESSION_NAMESPACE, ACTION_NAMESPACE)

#: The interactions of every model built before they were configurable (Tailor 0.1): context x action and
#: session x action, no `--ignore_linear`. A model with these flags keeps them across upgrades.
LEGACY_INTERACTIONS: tuple[str, ...] = (CONTEXT_NAMESPACE + ACTION_NAMESPACE, SESSION_NAMESPACE + ACTION_NAMESPACE)
LEGACY_IGNORE_LINEAR: tuple[str, ...] = ()

#: Defaults for new models (benchmarks/learning/README.md has the table they were chosen from).
DEFAULT_INTERACTIONS: tuple[str, ...] = LEGACY_INTERACTIONS
DEFAULT_IGNORE_LINEAR: tuple[str, ...] = (CONTEXT_NAMESPACE,)


def check_interactions(value: Sequence[str]) -> tuple[str, ...]:
    """Validate VW namespace interactions: 2 letters (quadratic) or 3 (cubic) from Tailor's namespaces.

    A term without the action namespace (`ss`) is the same for every action, so it never changes a ranking
    by itself; it is allowed because it shapes the regression's estimate of what the shared features say
    about the reward (benchmarks/learning/README.md measures `ss`)."""
    out = tuple(value)
    for term in out:
        if len(term) not in (2, 3) or any(ns not in NAMESPACES for ns in term):
            raise ValueError(
                f"interaction {term!r}: give 2 (quadratic) or 3 (cubic) namespace letters from "
                f"{', '.join(NAMESPACES)} (c: request context, s: session intent, a: action), e.g. ca or cca"
            )
    if len(set(out)) != len(out):
        raise ValueError(f"interactions repeat a term: {list(out)}")
    return out


def check_ignore_linear(value: Sequence[str]) -> tuple[str, ...]:
    """Validate namespace letters whose linear (uncrossed) terms VW should ignore."""
    out = tuple(value)
    for ns in out:
        if ns not in NAMESPACES:
            raise ValueError(f"ignore_linear {ns!r}: give namespace letters from {', '.join(NAMESPACES)}")
    if len(set(out)) != len(out):
        raise ValueError(f"ignore_linear repeats a namespace: {list(out)}")
    return out


class LearningSpec(BaseModel):
    """How a decision point's model learns: exploration and VW's learning parameters.

    Changing any of these starts a new model (VW cannot load a model into other reductions).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    exploration: Exploration = Field(default_factory=SquareCB)
    bits: int = Field(18, ge=10, le=28, description="feature hash table size, 2^bits weights")
    learning_rate: float | None = Field(None, gt=0, description="VW's -l; VW's default when unset")
    interactions: Annotated[tuple[str, ...], AfterValidator(check_interactions)] = Field(
        DEFAULT_INTERACTIONS, description="namespace interactions: -q for pairs, --cubic for triples"
    )
    ignore_linear: Annotated[tuple[str, ...], AfterValidator(check_ignore_linear)] = Field(
        DEFAULT_IGNORE_LINEAR, description="namespaces whose linear terms are ignored (--ignore_linear)"
    )

    def vw_args(self) -> str:
        """The full VW command line for this spec."""
        parts = ["--cb_explore_adf", self.exploration.vw_args(), COST_BOUNDS_ARGS]
        parts += [f"-q {term}" if len(term) == 2 else f"--cubic {term}" for term in self.interactions]
        parts += [f"--ignore_linear {ns}" for ns in self.ignore_linear]
        parts.append(f"-b {self.bits}")
        if self.learning_rate is not None:
            parts.append(f"-l {self.learning_rate!r}")
        return " ".join(parts)

    def fingerprint(self) -> str:
        """Short stable id of the VW arguments; models with different fingerprints are incompatible."""
        return hashlib.sha256(self.vw_args().encode()).hexdigest()[:8]


@dataclass(frozen=True, slots=True)
class DefaultedFlags:
    """The learning flags whose defaults may change between releases, as some model was built with them."""

    interactions: tuple[str, ...]
    ignore_linear: tuple[str, ...]
    gamma_scale: float | None  # SquareCB's, when the model explores with SquareCB


#: What every model of the first release was built with.
LEGACY_FLAGS = DefaultedFlags(LEGACY_INTERACTIONS, LEGACY_IGNORE_LINEAR, 10.0)


def recorded_flags(vw_args: str) -> DefaultedFlags:
    """The defaulted flags in a VW command line written by `LearningSpec.vw_args`."""
    tokens = vw_args.split()
    interactions: list[str] = []
    ignore_linear: list[str] = []
    gamma_scale: float | None = None
    for flag, value in pairwise(tokens):
        if flag in ("-q", "--quadratic", "--cubic"):
            interactions.append(value)
        elif flag == "--ignore_linear":
            ignore_linear.append(value)
        elif flag == "--gamma_scale" and "--squarecb" in tokens:
            gamma_scale = float(value)
    return DefaultedFlags(tuple(interactions), tuple(ignore_linear), gamma_scale)


@dataclass(frozen=True, slots=True)
class BuiltWith:
    """What an existing model was built with: its fingerprint and, where recorded, its VW command line.

    Models published before the command line was recorded carry only their fingerprint; they were built
    with the first release's flags, which `flag_candidates` offers last."""

    fingerprint: str
    vw_args: str | None = None

    def flag_candidates(self) -> list[DefaultedFlags]:
        found = [recorded_flags(self.vw_args)] if self.vw_args else []
        return [*found, LEGACY_FLAGS]


class VWPolicy:
    """One contextual-bandit model: predict a PMF over candidate actions, learn from logged outcomes."""

    def __init__(self, spec: LearningSpec, model_file: Path | None = None) -> None:
        args = f"{spec.vw_args()} --quiet"
        if model_file is not None:
            args += f" -i {model_file}"
        self.spec = spec
        self._ws = pyvw.Workspace(args, enable_logging=False)
        self.examples_learned = 0

    def predict(self, shared: str, actions: Sequence[str], actions_text: str | None = None) -> list[float]:
        """Probability of each action, in the order given, summing to 1.

        `actions_text` is ``"\n".join(actions)`` when the caller has it already (a catalog renders its
        actions' text once per version, so a Decide over the whole catalog joins nothing)."""
        text = "\n".join(actions) if actions_text is None else actions_text
        examples = _vw._parse(self._ws, f"{shared}\n{text}")
        try:
            _vw.predict_multi(self._ws, examples)
            scores: list[float] = examples[0].get_action_scores()
        finally:
            _vw._finish_example_multi_ex(self._ws, examples)
        if len(scores) != len(actions):
            # VW yields one score per action; anything else means a malformed example slipped through.
            raise RuntimeError(f"VW returned {len(scores)} scores for {len(actions)} actions")
        if not all(isfinite(s) for s in scores):
            # Overflowed arithmetic (features far too large reached VW): never an error for the shopper, who
            # gets a uniform draw; the server's validation bounds feature values so that this stays a fuse.
            log.error("VW returned non-finite probabilities %s; deciding uniformly", scores)
            return [1 / len(actions)] * len(actions)
        # VW's float32 arithmetic leaves ~1e-7 noise (a uniform PMF comes back as 0.3333332, 0.33333334, ...).
        # Rounding to whole millionths before normalising makes equal probabilities exactly equal, so
        # rankings and ties are stable, while the PMF still sums to 1 (integers: exact, and ~4x cheaper
        # than round(s, 6), which formats each float as decimal text).
        micros = [floor(s * 1e6 + 0.5) for s in scores]
        total = sum(micros)
        if not total > 0:
            raise RuntimeError(f"VW returned a PMF with no mass: {scores}")
        return [m / total for m in micros]

    def learn(self, shared: str, actions: Sequence[str], chosen: int, cost: float, probability: float) -> None:
        """One online update: the chosen action cost `cost` and was drawn with `probability`."""
        lines = list(actions)
        lines[chosen] = f"0:{cost!r}:{probability!r} {lines[chosen]}"
        examples = _vw._parse(self._ws, shared + "\n" + "\n".join(lines))
        try:
            _vw.learn_multi(self._ws, examples)
        finally:
            _vw._finish_example_multi_ex(self._ws, examples)
        self.examples_learned += 1

    def save(self, path: Path) -> None:
        """Write the model (with its learning state, so learning resumes after a load)."""
        self._ws.save(str(path))

    def close(self) -> None:
        self._ws.finish()
