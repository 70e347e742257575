"""Action catalogs: one YAML file per decision point, validated with pydantic.

A catalog declares a decision point's candidate actions (features and payload) and its policy: the
reward window, default reward, reward range, reward aggregation, exploration and VW learning
parameters. Errors name the file, the field and what is wrong, so `tailor catalog validate` can tell
a marketer exactly what to fix. `Catalog` pre-renders each action's VW line once per load, which keeps
feature encoding off the Decide path for catalog actions.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from policies import (
    DEFAULT_IGNORE_LINEAR,
    DEFAULT_INTERACTIONS,
    BuiltWith,
    Exploration,
    LearningSpec,
    SquareCB,
    action_line,
    check_ignore_linear,
    check_interactions,
)
from server.core import EventKind

DECISION_POINT_PATTERN = r"^[a-z0-9_]+$"
MAX_ID_BYTES = 256
MAX_ACTION_FEATURES = 64
MAX_CATALOG_ACTIONS = 256


def _check_feature_value(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("use a string or a number, not true/false")
    if isinstance(value, int | float) and not math.isfinite(value):
        raise ValueError("numbers must be finite")
    return value


FeatureScalar = Annotated[str | float, Field(union_mode="left_to_right")]


class LearningParams(BaseModel):
    """VW learning parameters. Changing them starts a new model for the decision point.

    `interactions` and `ignore_linear` left unset mean: the flags of the decision point's existing model
    (so upgrading Tailor never restarts a model because a default changed), or the current defaults for a
    decision point without one. Setting either explicitly is a change of learning flags like any other."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bits: int = Field(18, ge=10, le=28, description="2^bits hashed weights")
    learning_rate: float | None = Field(None, gt=0, description="VW's -l; VW's default when unset")
    interactions: Annotated[tuple[str, ...], AfterValidator(check_interactions)] | None = Field(
        None, description="VW namespace interactions, e.g. [ca, sa, cca] (c context, s session, a action)"
    )
    ignore_linear: Annotated[tuple[str, ...], AfterValidator(check_ignore_linear)] | None = Field(
        None, description="namespace letters whose uncrossed features VW ignores, e.g. [c]"
    )


class RewardRule(BaseModel):
    """A reward derived from a later event of the same session, e.g. add_to_cart 0.3, purchase 1.0."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event: EventKind = Field(description="the event type that earns the reward")
    reward: float = Field(description="the reward; with scale_by_price, per unit of the event's price")
    scale_by_price: bool = Field(False, description="multiply by the event's price (order value for a purchase)")

    def value(self, price: float, low: float, high: float) -> float:
        """The derived reward for an event, clamped into the decision point's reward range."""
        raw = self.reward * price if self.scale_by_price else self.reward
        return min(high, max(low, raw))


class NewActionFloor(BaseModel):
    """The exploration floor for actions added to a catalog whose model has already learned."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    probability: float = Field(
        0.05, ge=0, le=0.5, description="minimum probability of a new action (capped at an equal share); 0 turns it off"
    )
    until_learned: int = Field(
        100, ge=1, le=1_000_000, description="until the model has learned this many decisions that chose the action"
    )


class PolicyConfig(BaseModel):
    """How a decision point decides and learns."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    reward_window_seconds: float = Field(600.0, gt=0, le=7 * 24 * 3600, description="how long rewards are joined")
    default_reward: float = Field(0.0, description="learned when no reward came within the window")
    reward_range: tuple[float, float] = Field((0.0, 1.0), description="[low, high]; rewards outside are INVALID")
    aggregation: Literal["first", "sum", "max"] = Field(
        "first", description="first: learn at the first reward; sum/max: learn when the window closes"
    )
    exploration: Exploration = Field(default_factory=SquareCB)
    reward_rules: list[RewardRule] = Field(default_factory=list, description="rewards derived from later events")
    learning: LearningParams = Field(default_factory=LearningParams)
    new_action_floor: NewActionFloor = Field(default_factory=NewActionFloor)
    baseline_action: str | None = Field(
        None,
        min_length=1,
        description="what the site showed before Tailor: the learning-health metrics estimate its value (IPS) "
        "beside the live policy's; unset = the catalog's first action",
    )

    mode: Literal["learn", "apprentice"] = Field(
        "learn",
        description="learn: serve the learned policy; apprentice: serve the baseline action while the model learns "
        "from it, and report how often the model would have chosen the same (see apprentice_exploration)",
    )
    apprentice_exploration: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="apprentice mode: share of decisions drawn from the model's own policy instead of the baseline, "
        "so the learned policy's value against the baseline can be estimated (0: always the baseline)",
    )
    holdout_share: float = Field(
        0.0,
        ge=0.0,
        le=0.5,
        description="share of sessions (sticky per session) always served the baseline action and kept out of "
        "learning, to measure the lift of the learned policy against it",
    )

    @model_validator(mode="after")
    def _check_rewards(self) -> PolicyConfig:
        low, high = self.reward_range
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise ValueError(f"reward_range must be two finite numbers [low, high] with low < high, got {[low, high]}")
        if not (math.isfinite(self.default_reward) and low <= self.default_reward <= high):
            raise ValueError(f"default_reward {self.default_reward} must lie within reward_range {[low, high]}")
        events = [r.event for r in self.reward_rules]
        if len(set(events)) != len(events):
            raise ValueError(f"reward_rules name an event type more than once: {events}")
        for i, rule in enumerate(self.reward_rules):
            if not math.isfinite(rule.reward):
                raise ValueError(f"reward_rules.{i}.reward must be a finite number")
            if not rule.scale_by_price and not low <= rule.reward <= high:
                raise ValueError(f"reward_rules.{i}.reward {rule.reward} must lie within reward_range {[low, high]}")
        return self

    def learning_spec(self, existing: Sequence[BuiltWith] = ()) -> LearningSpec:
        """The model this policy asks for, given the decision point's existing models (newest first).

        Flags whose defaults may change between releases (interactions, ignore_linear, SquareCB's
        gamma_scale) take the defaults when the catalog leaves them unset, unless an existing model matches
        the catalog on every key it does set: then that model's flags are kept, and it resumes instead of
        starting over."""
        learning = self.learning
        interactions = DEFAULT_INTERACTIONS if learning.interactions is None else learning.interactions
        ignore_linear = DEFAULT_IGNORE_LINEAR if learning.ignore_linear is None else learning.ignore_linear
        spec = LearningSpec(
            exploration=self.exploration,
            bits=learning.bits,
            learning_rate=learning.learning_rate,
            interactions=interactions,
            ignore_linear=ignore_linear,
        )
        open_gamma = isinstance(self.exploration, SquareCB) and "gamma_scale" not in self.exploration.model_fields_set
        if learning.interactions is not None and learning.ignore_linear is not None and not open_gamma:
            return spec
        for built in existing:
            for flags in built.flag_candidates():
                update: dict[str, Any] = {}
                if learning.interactions is None:
                    update["interactions"] = flags.interactions
                if learning.ignore_linear is None:
                    update["ignore_linear"] = flags.ignore_linear
                if open_gamma and flags.gamma_scale is not None:
                    update["exploration"] = self.exploration.model_copy(update={"gamma_scale": flags.gamma_scale})
                kept = spec.model_copy(update=update)
                if kept.fingerprint() == built.fingerprint:
                    return kept
        return spec


class ActionSpec(BaseModel):
    """One catalog action."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, pattern=r"^\S+$", description="unique within the catalog, no whitespace")
    features: dict[str, FeatureScalar] = Field(default_factory=dict, max_length=MAX_ACTION_FEATURES)
    payload: dict[str, str] = Field(default_factory=dict, description="returned to the client when chosen")
    active_from: AwareDatetime | None = Field(None, description="not shown before this time (RFC 3339 with offset)")
    active_until: AwareDatetime | None = Field(None, description="not shown from this time on (RFC 3339 with offset)")
    paused: bool = Field(False, description="not shown at all until unpaused")

    @model_validator(mode="after")
    def _window(self) -> ActionSpec:
        if self.active_from is not None and self.active_until is not None and self.active_from >= self.active_until:
            raise ValueError(f"active_from {self.active_from.isoformat()} must be before active_until")
        return self

    @property
    def window(self) -> tuple[float, float] | None:
        """(from, until) as epoch seconds, infinite where open; None when always active."""
        if self.paused:
            return (math.inf, math.inf)
        if self.active_from is None and self.active_until is None:
            return None
        start = self.active_from.timestamp() if self.active_from is not None else -math.inf
        return (start, self.active_until.timestamp() if self.active_until is not None else math.inf)

    @field_validator("id")
    @classmethod
    def _id_size(cls, value: str) -> str:
        if len(value.encode()) > MAX_ID_BYTES:
            raise ValueError(f"ids are at most {MAX_ID_BYTES} bytes")
        return value

    @field_validator("features", mode="before")
    @classmethod
    def _feature_values(cls, value: Any) -> Any:
        # before coercion: pydantic would turn YAML's true/yes into 1.0 without a word
        if not isinstance(value, dict):
            return value
        for key, v in value.items():
            if not key:
                raise ValueError("feature names must not be empty")
            _check_feature_value(v)
        return value


class CatalogSpec(BaseModel):
    """A catalog file: one decision point."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    decision_point: str = Field(pattern=DECISION_POINT_PATTERN, max_length=128)
    description: str = ""
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    actions: list[ActionSpec] = Field(default_factory=list, max_length=MAX_CATALOG_ACTIONS)

    @field_validator("actions")
    @classmethod
    def _unique_ids(cls, actions: list[ActionSpec]) -> list[ActionSpec]:
        seen: set[str] = set()
        for a in actions:
            if a.id in seen:
                raise ValueError(f"action id {a.id!r} appears twice")
            seen.add(a.id)
        return actions

    @model_validator(mode="after")
    def _baseline_in_catalog(self) -> CatalogSpec:
        baseline = self.policy.baseline_action
        if baseline is not None and self.actions and baseline not in {a.id for a in self.actions}:
            raise ValueError(f"policy.baseline_action {baseline!r} is not an action of this catalog")
        return self


@dataclass(frozen=True, slots=True)
class ActiveActions:
    """A catalog's actions active over [since, until): ids, VW lines and their text, index by id."""

    ids: tuple[str, ...]
    lines: tuple[str, ...]
    text: str
    index: Mapping[str, int]
    since: float
    until: float

    @classmethod
    def at(cls, catalog: Catalog, now: float) -> ActiveActions:
        windows = catalog.windows or ()
        picked = [i for i, (start, end) in enumerate(windows) if start <= now < end]
        boundaries = [t for w in windows for t in w if math.isfinite(t)]
        since = max((t for t in boundaries if t <= now), default=-math.inf)
        until = min((t for t in boundaries if t > now), default=math.inf)
        ids = tuple(catalog.action_ids[i] for i in picked)
        lines = tuple(catalog.action_lines[i] for i in picked)
        return cls(ids, lines, "\n".join(lines), {a: i for i, a in enumerate(ids)}, since, until)


@dataclass(frozen=True, slots=True)
class Catalog:
    """A validated catalog, with each action's VW line rendered once."""

    spec: CatalogSpec
    source: Path
    action_ids: tuple[str, ...]
    action_lines: tuple[str, ...]
    action_text: str  # the lines joined for VW, rendered once per catalog version
    index: Mapping[str, int]
    rules: Mapping[str, RewardRule]  # event type -> the reward rule for it
    # Per action (from, until) in epoch seconds when any action is scheduled or paused; None: all always active.
    windows: tuple[tuple[float, float], ...] | None = None
    _active: list[ActiveActions] = field(default_factory=list, compare=False, repr=False)  # cached active set

    def active(self, now: float) -> ActiveActions:
        """The actions active at `now` (all of them without schedules), cached until the next boundary."""
        cached = self._active[0] if self._active else None
        if cached is not None and cached.since <= now < cached.until:
            return cached
        found = ActiveActions.at(self, now)
        self._active[:] = [found]
        return found

    @property
    def name(self) -> str:
        return self.spec.decision_point

    @property
    def policy(self) -> PolicyConfig:
        return self.spec.policy

    @property
    def baseline_action(self) -> str | None:
        """The action whose value the learning-health metrics estimate beside the live policy's."""
        if self.spec.policy.baseline_action is not None:
            return self.spec.policy.baseline_action
        return self.action_ids[0] if self.action_ids else None

    @classmethod
    def compile(cls, spec: CatalogSpec, source: Path) -> Catalog:
        ids = tuple(a.id for a in spec.actions)
        lines = tuple(action_line(a.id, a.features) for a in spec.actions)
        always = (-math.inf, math.inf)
        windows = [a.window for a in spec.actions]
        return cls(
            spec=spec,
            source=source,
            action_ids=ids,
            action_lines=lines,
            action_text="\n".join(lines),
            index={a: i for i, a in enumerate(ids)},
            rules={r.event: r for r in spec.policy.reward_rules},
            windows=None if all(w is None for w in windows) else tuple(w or always for w in windows),
        )

    def document(self) -> dict[str, Any]:
        """The catalog as data, with only the keys its author set: validating it gives this catalog back,
        learning keys left unset included (they keep an existing model's flags)."""
        doc: dict[str, Any] = self.spec.model_dump(mode="json", exclude_unset=True)
        for action in doc.get("actions", []):  # maps in the order a reader expects, whatever order they came in
            for key in ("features", "payload"):
                if key in action:
                    action[key] = dict(sorted(action[key].items()))
        return doc

    def payload(self, action_id: str) -> Mapping[str, str]:
        i = self.index.get(action_id)
        return self.spec.actions[i].payload if i is not None else {}


class CatalogError(Exception):
    """One or more catalog files are invalid; `problems` lists each as `file: field: what is wrong`, and
    `fields` the same as (field, what is wrong) pairs where a field is to blame (the admin API's violations)."""

    def __init__(self, problems: list[str], fields: list[tuple[str, str]] | None = None) -> None:
        self.problems = problems
        self.fields = fields if fields is not None else [("(file)", p) for p in problems]
        super().__init__("\n".join(problems))


def _violations(err: ValidationError) -> Iterator[tuple[str, str]]:
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "(file)"
        got = e.get("input")
        shown = f" (got {got!r})" if not isinstance(got, dict | list) and got is not None else ""
        msg = e["msg"]
        if e["type"] == "string_pattern_mismatch" and e["loc"] == ("decision_point",):
            msg = "use lowercase letters, digits and underscores only, like home_layout"
        elif e["type"] == "extra_forbidden":
            msg = "unknown key; check its spelling and indentation"
        yield where, f"{msg}{shown}"


def load_catalog_file(path: Path) -> Catalog:
    """Parse and validate one catalog file."""
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise CatalogError([f"{path}: (file): not valid YAML: {err}".replace("\n", " ")]) from None
    except OSError as err:
        raise CatalogError([f"{path}: (file): cannot read: {err.strerror}"]) from None
    return load_catalog_document(doc, path)


def load_catalog_document(doc: Any, source: Path) -> Catalog:
    """Validate one catalog document (a file's parsed YAML, or a stored version); problems name `source`."""
    if not isinstance(doc, dict):
        raise CatalogError([f"{source}: (file): expected a mapping with decision_point, policy and actions"])
    try:
        spec = CatalogSpec.model_validate(doc)
    except ValidationError as err:
        fields = list(_violations(err))
        raise CatalogError([f"{source}: {where}: {what}" for where, what in fields], fields) from None
    return Catalog.compile(spec, source)


def catalog_dir_fingerprint(directory: Path) -> str:
    """A hash of the catalog files' names and bytes: it changes when a file that `load_catalog_dir` reads does."""
    digest = hashlib.sha256()
    if directory.is_dir():
        for path in sorted(p for p in directory.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file()):
            with contextlib.suppress(OSError):  # a file replaced under us: the next look sees the new one
                digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def load_catalog_dir(directory: Path) -> dict[str, Catalog]:
    """Load every *.yaml / *.yml in a directory; all problems across files are reported at once."""
    if not directory.is_dir():
        raise CatalogError([f"{directory}: (directory): not a directory"])
    files = sorted(p for p in directory.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    if not files:
        raise CatalogError([f"{directory}: (directory): no catalog files (*.yaml) found"])
    problems: list[str] = []
    catalogs: dict[str, Catalog] = {}
    for path in files:
        try:
            cat = load_catalog_file(path)
        except CatalogError as err:
            problems += err.problems
            continue
        if cat.name in catalogs:
            first = catalogs[cat.name].source
            problems.append(f"{path}: decision_point: {cat.name!r} is already defined in {first.name}")
            continue
        catalogs[cat.name] = cat
    if problems:
        raise CatalogError(problems)
    return catalogs
