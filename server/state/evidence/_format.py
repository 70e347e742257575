"""One learned decision as a line of VW's DSJSON, the format VW reads back with `--dsjson`.

A line holds the decision exactly as it was learned: the shared features (`c`, with the namespaces `c` context and
`s` session), every candidate's features (`c._multi`, in candidate order), the chosen one (`_labelIndex`, 0-based;
`_label_Action`, 1-based), the cost it was learned with (`_label_cost`: minus the reward scaled to [0, 1]) and its
probability (`_label_probability`), both as the float32 VW learned; the ranking as VW orders it (`a`, 1-based
indices, and their probabilities `p`); the outcome (`o`), the time of the decision (`Timestamp`) and its event id
(`EventId`); `_skipLearn` for a decision never learned (a deferred decision never activated, or a holdout
session's). Tailor's own fields are in `_tailor`, which VW ignores: the format version, decision point,
pseudonymised session, model version, the catalog's baseline action, arm (`policy`, `apprentice` with the model's
own choice and its probability, `holdout`), reward and its source, and the times.

Features are written as VW's text format hashes them: every token of the text example becomes a JSON feature of the
same name (1 for a text feature `key=value`, which VW hashes as that one name; for `key:number`, the number). JSON
string values are never used, so `--chain_hash` (which changes how VW hashes string values) and the text format
agree.

Numbers are stored as the very decimals Tailor gave VW (lossless, and cheap to write on the learner's path). VW's
text parser reads a decimal into a float32 its own way, which can differ by one step from the nearest float32 a
JSON parser gives, and it drops zero-valued features; `canonical` (applied by `tailor export-logs`, and by `tailor
evaluate` to lines it reads from a data directory) rewrites a line's features and label with the float32 values
VW's text parser read, so `vw --cb_explore_adf --dsjson --chain_hash` learns from an exported line exactly what
Tailor learned from it (tests/evidence checks the two models are equal, weight for weight). A canonical line says so
in `_tailor.numbers` ("vw").
"""

from __future__ import annotations

import functools
import hmac
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from policies import escape_value, reward_to_cost, vw_text_float

from ..decision_log import DecisionRecord

#: Version of `_tailor` and of the lines' layout; readers refuse a newer one.
LOG_FORMAT = 1

Outcome = Literal["reward", "default", "unactivated"]


class Pseudonymizer:
    """Identifiers (session ids, event ids) as a keyed HMAC: stable within an installation, so a session's
    decisions still group together, and not reversible by enumerating likely ids (a plain hash would be)."""

    def __init__(self, key: bytes | None) -> None:
        self.key = key  # None: identifiers are written as they are (a deliberate setting)
        #: Session ids come back decision after decision: their pseudonyms are remembered (event ids never repeat).
        self.session = functools.lru_cache(maxsize=1 << 16)(self.__call__)

    def __call__(self, identifier: str) -> str:
        if self.key is None:
            return identifier
        return hmac.digest(self.key, identifier.encode(), "sha256").hex()[:32]


_quote = json.encoder.encode_basestring_ascii


def _namespaces_json(line: str) -> str:
    """`|c a=b x:1.5 |s y:2` (a label or `shared` before the first bar is dropped) as the members of a JSON object,
    numbers verbatim: `"c":{"a=b":1,"x":1.5},"s":{"y":2}`."""
    parts = []
    for part in line.split("|")[1:]:
        name, _, body = part.partition(" ")
        features = []
        # Tokens are separated by ASCII spaces only, as VW reads them: str.split() would also split on the Unicode
        # whitespace a text value may hold (a no-break space in a category, U+0085), which Tailor never escapes.
        for token in filter(None, body.split(" ")):
            key, colon, number = token.rpartition(":")  # ":" never occurs in an escaped key or text value
            features.append(f"{_quote(key)}:{number}" if colon else f"{_quote(token)}:1")
        parts.append(f"{_quote(name)}:{{{','.join(features)}}}")
    return ",".join(parts)


def _text(namespaces: dict[str, Any]) -> str:
    """The inverse of `_namespaces_json`: JSON namespaces back to VW text (`|c a=b x:1.5 |s y:2`)."""
    parts = []
    for name, features in namespaces.items():
        if name.startswith("_") or not isinstance(features, dict):
            continue
        tokens = [key if value == 1.0 and "=" in key else f"{key}:{value!r}" for key, value in features.items()]
        parts.append(f"|{name} {' '.join(tokens)}".rstrip())
    return " ".join(parts)


def _action_id(line: str) -> str:
    """The (escaped) id of an action line `|a id=<id> ...`."""
    token = line.split(" ", 2)[1] if " " in line else ""
    return token[3:] if token.startswith("id=") else ""


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@functools.lru_cache(maxsize=1024)
def _candidates(actions: tuple[str, ...]) -> tuple[str, dict[str, int]]:
    """A candidate set's `_multi` as JSON and each (escaped) id's position: computed once per catalog version (its
    action lines are the same objects decision after decision), not per line written."""
    multi = "[" + ",".join("{" + _namespaces_json(line) + "}" for line in actions) + "]"
    return multi, {_action_id(line): i for i, line in enumerate(actions)}


_escaped = functools.lru_cache(maxsize=1 << 14)(escape_value)
_COMPACT = (",", ":")
_dumps = json.JSONEncoder(separators=_COMPACT).encode


def _json(value: str | float | None) -> str:
    """A scalar as json.dumps writes it (finite floats and ints are their repr)."""
    if value is None:
        return "null"
    return _quote(value) if isinstance(value, str) else repr(value)


@functools.lru_cache(maxsize=1024)
def _strings(values: tuple[str, ...]) -> str:
    """A list of strings as JSON (the candidates' ids: the same list decision after decision)."""
    return "[" + ",".join(map(_quote, values)) + "]"


def dsjson_line(
    record: DecisionRecord,
    reward: float,
    outcome: Outcome,
    learned_at: float,
    pseudonymize: Pseudonymizer,
) -> str:
    """The DSJSON line of a decision as it was learned (or, `unactivated`, as it was never learned).

    Written on the learner's path for every decision, so it is formatted directly, byte for byte what json.dumps
    would write for it (compact separators, ASCII), from fragments: the candidates' part (`_multi`, most of a
    line) and their ids are encoded once per candidate set, a session's pseudonym once per session."""
    decision = record.decision
    multi, position = _candidates(record.actions)
    ranking = decision.ranking
    order: list[str] = []
    action_ids = [""] * len(position)
    for action_id, _ in ranking:
        i = position[_escaped(action_id)]
        order.append(str(i + 1))
        action_ids[i] = action_id
    cost = reward_to_cost(reward, *record.reward_range)
    event_id = _quote(pseudonymize(decision.event_id))
    # The text label Tailor learned from was `0:{cost!r}:{probability!r}`.
    observed = f'[{{"v":{reward!r},"EventId":{event_id}}}]' if outcome == "reward" else "[]"
    head = (
        f'{{"_label_cost":{cost!r},"_label_probability":{decision.probability!r},"_label_Action":{record.chosen + 1},'
        f'"_labelIndex":{record.chosen},"o":{observed},"Timestamp":"{_iso(record.created_at)}","Version":"1",'
        f'"EventId":{event_id},"a":[{",".join(order)}]'
    )
    shared = _namespaces_json(record.shared)
    context = "{" + shared + ("," if shared else "") + '"_multi":' + multi + "}"
    model = _quote(decision.model_version)
    skip = ',"_skipLearn":true' if outcome == "unactivated" or decision.arm == "holdout" else ""  # never learned
    apprentice = (
        f',"model_action":{_quote(decision.model_action_id)},"model_probability":{decision.model_probability!r}'
        if decision.arm == "apprentice"
        else ""
    )
    low, high = record.reward_range
    tailor = (
        f'{{"format":{LOG_FORMAT},"decision_point":{_quote(record.decision_point)},'
        f'"session":{_quote(pseudonymize.session(record.session_id))},"action_ids":{_strings(tuple(action_ids))},'
        f'"chosen":{_quote(decision.action_id)},"model":{model},"arm":{_quote(decision.arm)},'
        f'"baseline":{_json(record.baseline)}{apprentice},"reward":{reward!r},"outcome":{_quote(outcome)},'
        f'"reward_range":[{low!r},{high!r}],"rewards":[{",".join(map(repr, record.rewards))}],'
        f'"decided_at":{record.created_at!r},"activated_at":{_json(record.activated_at)},"learned_at":{learned_at!r}}}'
    )
    probabilities = ",".join([repr(p) for _, p in ranking])
    return f'{head},"c":{context},"p":[{probabilities}],"VWState":{{"m":{model}}}{skip},"_tailor":{tailor}}}'


class _Number(str):
    """A JSON number as its decimal text (json.loads' parse hooks), until `canonical` decides what it becomes."""


def _plain(value: Any) -> Any:
    if isinstance(value, _Number):
        return float(value) if any(c in value for c in ".eE") else int(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _vw_features(namespace: dict[str, Any]) -> dict[str, float]:
    out = {}
    for key, number in namespace.items():
        value = vw_text_float(str(number))
        if value != 0.0:  # VW's text parser drops zero-valued features
            out[key] = value
    return out


def canonical(line: str) -> str:
    """The line with its features and label as the float32 values VW's text parser read from the decimals Tailor
    gave it (see the module's docstring); a canonical line is returned as it is. Raises LogFormatError."""
    if '"numbers":"vw"' in line:
        return line
    try:
        doc = json.loads(line, parse_float=_Number, parse_int=_Number)
        context = doc["c"]
        multi = context.pop("_multi")
        out = _plain(doc)
        out["_label_cost"] = vw_text_float(str(doc["_label_cost"]))
        out["_label_probability"] = vw_text_float(str(doc["_label_probability"]))
        out["c"] = {name: _vw_features(features) for name, features in context.items()}
        out["c"]["_multi"] = [{name: _vw_features(f) for name, f in action.items()} for action in multi]
        out["_tailor"]["numbers"] = "vw"
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise LogFormatError(f"not a Tailor decision line: {type(err).__name__}: {err}") from None
    return _dumps(out)


@dataclass(frozen=True, slots=True)
class LoggedDecision:
    """A line read back: the line itself (VW reads it as it is) and what evaluation needs of it, compact (a
    100k-decision log is held in memory by `tailor evaluate`)."""

    line: str
    event_id: str
    decision_point: str
    session: str
    action_ids: tuple[str, ...]  # candidate order
    chosen: int
    cost: float  # _label_cost: the float32 VW learned
    probability: float  # _label_probability: the float32 VW learned
    reward: float  # as reported (or the default), in the decision point's reward range
    reward_range: tuple[float, float]
    pmf: tuple[float, ...]  # every candidate's logged probability, in candidate order
    skip_learn: bool
    outcome: str
    arm: str
    baseline: str | None
    model_action: str | None
    decided_at: float
    learned_at: float
    model: str

    @property
    def doc(self) -> dict[str, Any]:
        return dict(json.loads(self.line))

    @property
    def shared(self) -> str:
        """The shared line of the VW text example it was learned as ("shared |c ... |s ...")."""
        return f"shared {_text(self.doc['c'])}"

    @property
    def actions(self) -> tuple[str, ...]:
        """The action lines of that example ("|a ..."), in candidate order."""
        return tuple(_text(action) for action in self.doc["c"]["_multi"])


class LogFormatError(ValueError):
    """A line that is not a decision of a format this release reads."""


def read_line(line: str) -> LoggedDecision:
    """Parse one DSJSON line written by `dsjson_line` (LogFormatError names what is wrong)."""
    try:
        doc = json.loads(line)
        tailor = doc["_tailor"]
        if tailor.get("format") != LOG_FORMAT:
            raise LogFormatError(f"log format {tailor.get('format')!r}; this release reads {LOG_FORMAT}")
        n = len(doc["c"]["_multi"])
        pmf = [0.0] * n
        for index, probability in zip(doc["a"], doc["p"], strict=True):
            pmf[int(index) - 1] = float(probability)
        low, high = tailor["reward_range"]
        action_ids = tuple(str(a) for a in tailor["action_ids"])
        if len(action_ids) != n:
            raise LogFormatError(f"not a Tailor decision line: {len(action_ids)} action ids for {n} candidates")
        return LoggedDecision(
            line=line,
            event_id=str(doc["EventId"]),
            decision_point=str(tailor["decision_point"]),
            session=str(tailor["session"]),
            action_ids=action_ids,
            chosen=int(doc["_labelIndex"]),
            cost=float(doc["_label_cost"]),
            probability=float(doc["_label_probability"]),
            reward=float(tailor["reward"]),
            reward_range=(float(low), float(high)),
            pmf=tuple(pmf),
            skip_learn=bool(doc.get("_skipLearn", False)),
            outcome=str(tailor["outcome"]),
            arm=str(tailor.get("arm", "policy")),
            baseline=tailor.get("baseline"),
            model_action=tailor.get("model_action"),
            decided_at=float(tailor["decided_at"]),
            learned_at=float(tailor["learned_at"]),
            model=str(tailor["model"]),
        )
    except LogFormatError:
        raise
    except (KeyError, TypeError, ValueError, IndexError) as err:
        raise LogFormatError(f"not a Tailor decision line: {type(err).__name__}: {err}") from None
