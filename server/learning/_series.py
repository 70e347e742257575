"""The console's over-time series, kept where every decision passes: the learner.

Per decision point and per minute: how many decisions each action got and the rewards they earned (scaled to [0, 1]
by the reward range), and the IPS terms of three policies' value (live, uniform random, always the baseline: count,
sum, sum of squares, so an interval over any window is `policies.mean_interval` of the summed buckets). Embedded,
the server's learner sees every decision; in Redis mode the leading `tailor learn` sees every replica's, so one
series covers the whole fleet either way.

Bounded: minutes older than a day are folded into hours, and hours older than `keep_seconds` (7 days) dropped. Kept
across restarts: embedded in `DATA_DIR/console-series.json`, Redis mode in `P:{m}:series` (written with each
publish, read back by the next leader and by every replica's console). Both carry `SERIES_FORMAT`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

#: Version of the JSON document; a reader refuses a newer one (and starts empty, saying so).
SERIES_FORMAT = 1
BUCKET_SECONDS = 60
KEEP_SECONDS = 7 * 86400.0
FINE_SECONDS = 86400.0  # minutes are kept as minutes this long, then folded into hours
POLICIES = ("live", "uniform", "baseline")


@dataclass(slots=True)
class Bucket:
    """One decision point's minute."""

    decisions: dict[str, int] = field(default_factory=dict)  # action -> learned decisions that chose it
    rewards: dict[str, float] = field(default_factory=dict)  # action -> sum of scaled rewards
    # policy -> [terms, sum, sum of squares] of its IPS terms (`Metrics.value_estimates`' terms)
    values: dict[str, list[float]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"d": self.decisions, "r": self.rewards, "v": self.values}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Bucket:
        return cls(
            {str(a): int(n) for a, n in doc["d"].items()},
            {str(a): float(r) for a, r in doc["r"].items()},
            {str(p): [float(x) for x in v] for p, v in doc["v"].items()},
        )


class ActionSeries:
    """Every decision point's minutes (see the module's docstring)."""

    def __init__(self, keep_seconds: float = KEEP_SECONDS, track_deltas: bool = False) -> None:
        self.keep_seconds = keep_seconds
        self.points: dict[str, dict[int, Bucket]] = {}
        self.changed = False
        # Redis mode: what was added since the last flush, per (decision point, minute), added to Redis with
        # HINCRBYFLOAT so that a new leader adds to the minute its predecessor began instead of overwriting it.
        self.deltas: dict[tuple[str, int], Bucket] | None = {} if track_deltas else None

    def add(
        self,
        decision_point: str,
        action_id: str,
        reward: float,
        probability: float,
        candidates: int,
        baseline_chosen: bool | None,
        at: float,
    ) -> None:
        """One learned decision (the arguments of `Metrics.value_estimates().add`, with the action and time)."""
        minute = int(at // BUCKET_SECONDS)
        buckets = self.points.setdefault(decision_point, {})
        bucket = buckets.get(minute)
        if bucket is None:
            bucket = buckets[minute] = Bucket()
        targets = [bucket]
        if self.deltas is not None:
            delta = self.deltas.get((decision_point, minute))
            if delta is None:
                delta = self.deltas[(decision_point, minute)] = Bucket()
            targets.append(delta)
        for b in targets:
            b.decisions[action_id] = b.decisions.get(action_id, 0) + 1
            b.rewards[action_id] = b.rewards.get(action_id, 0.0) + reward
            _term(b, "live", reward)
            if probability > 0 and candidates > 0:
                _term(b, "uniform", reward / (candidates * probability))
                if baseline_chosen is not None:
                    _term(b, "baseline", reward / probability if baseline_chosen else 0.0)
        self.changed = True

    def prune(self, now: float | None = None) -> None:
        """Drop minutes past the retention, and fold minutes older than a day into hours (keyed by the hour's first
        minute): a week is 1,440 minutes and 144 hours per decision point, not 10,080 minutes."""
        now = time.time() if now is None else now
        oldest = int((now - self.keep_seconds) // BUCKET_SECONDS)
        fold_before = int((now - FINE_SECONDS) // BUCKET_SECONDS)
        per_hour = 3600 // BUCKET_SECONDS
        for buckets in self.points.values():
            for minute in [m for m in buckets if m < oldest]:
                del buckets[minute]
            for minute in [m for m in buckets if m < fold_before and m % per_hour]:
                hour = minute - minute % per_hour
                bucket = buckets.pop(minute)
                buckets[hour] = summed([buckets[hour], bucket]) if hour in buckets else bucket

    def window(self, decision_point: str, since: float, until: float) -> list[tuple[int, Bucket]]:
        """The decision point's minutes in [since, until), oldest first (minutes without decisions are absent)."""
        low, high = int(since // BUCKET_SECONDS), int(until // BUCKET_SECONDS)
        buckets = self.points.get(decision_point, {})
        return sorted((m, b) for m, b in buckets.items() if low <= m <= high)

    def to_doc(self) -> dict[str, Any]:
        self.prune()
        return {
            "format": SERIES_FORMAT,
            "bucket_seconds": BUCKET_SECONDS,
            "points": {
                point: {str(m): b.to_json() for m, b in buckets.items()} for point, buckets in self.points.items()
            },
        }

    def load_doc(self, doc: dict[str, Any]) -> None:
        """Replace the series with a saved one; ValueError names what is wrong (a newer format, a bad document)."""
        if doc.get("format") != SERIES_FORMAT or doc.get("bucket_seconds") != BUCKET_SECONDS:
            raise ValueError(f"series format {doc.get('format')!r}; this release reads {SERIES_FORMAT}")
        try:
            self.points = {
                str(point): {int(m): Bucket.from_json(b) for m, b in buckets.items()}
                for point, buckets in doc["points"].items()
            }
        except (KeyError, TypeError, AttributeError) as err:
            raise ValueError(f"not a series document: {type(err).__name__}: {err}") from None
        self.prune()


def _term(bucket: Bucket, policy: str, term: float) -> None:
    counters = bucket.values.get(policy)
    if counters is None:
        counters = bucket.values[policy] = [0.0, 0.0, 0.0]
    counters[0] += 1
    counters[1] += term
    counters[2] += term * term


def summed(buckets: Iterable[Bucket]) -> Bucket:
    """The buckets added up (counts, reward sums and value counters add)."""
    out = Bucket()
    for b in buckets:
        for a, n in b.decisions.items():
            out.decisions[a] = out.decisions.get(a, 0) + n
        for a, r in b.rewards.items():
            out.rewards[a] = out.rewards.get(a, 0.0) + r
        for p, (terms, total, squares) in b.values.items():
            c = out.values.setdefault(p, [0.0, 0.0, 0.0])
            c[0] += terms
            c[1] += total
            c[2] += squares
    return out


# --- Redis mode ---------------------------------------------------------------------------------------------------
# One hash per decision point and minute, `<prefix>:{m}:series:<decision point>:<minute>`: fields `d:<action>`
# (decisions), `r:<action>` (reward sum), `v:<policy>:<0|1|2>` (value counters), and `format`; it expires with the
# series' retention. The leading learner adds its deltas after each publish; every replica's console reads them.


def series_key(prefix: str, decision_point: str, minute: int) -> str:
    return f"{prefix}:{{m}}:series:{decision_point}:{minute}"


async def flush_to_redis(client: Any, prefix: str, series: ActionSeries) -> None:
    """Add the deltas since the last flush (HINCRBYFLOAT: additive, so two leaders' halves of a minute add up)."""
    if not series.deltas:
        return
    deltas, series.deltas = series.deltas, {}  # taken before the round trip: a failed one loses them (display only)
    async with client.pipeline(transaction=False) as pipe:
        for (point, minute), b in deltas.items():
            key = series_key(prefix, point, minute)
            for a, n in b.decisions.items():
                pipe.hincrbyfloat(key, f"d:{a}", n)
            for a, r in b.rewards.items():
                pipe.hincrbyfloat(key, f"r:{a}", r)
            for policy, counters in b.values.items():
                for i, x in enumerate(counters):
                    pipe.hincrbyfloat(key, f"v:{policy}:{i}", x)
            pipe.hset(key, "format", SERIES_FORMAT)
            pipe.expire(key, int(KEEP_SECONDS))
        await pipe.execute()


async def read_from_redis(
    client: Any, prefix: str, decision_points: Iterable[str], since: float, until: float
) -> ActionSeries:
    """The decision points' minutes in [since, until] as the learners flushed them (one pipelined round trip)."""
    series = ActionSeries()
    low, high = int(since // BUCKET_SECONDS), int(until // BUCKET_SECONDS)
    wanted = [(p, m) for p in decision_points for m in range(low, high + 1)]
    async with client.pipeline(transaction=False) as pipe:
        for point, minute in wanted:
            pipe.hgetall(series_key(prefix, point, minute))
        replies = await pipe.execute()
    for (point, minute), fields in zip(wanted, replies, strict=True):
        if not fields:
            continue
        b = Bucket()
        for raw_key, raw_value in fields.items():
            key = raw_key.decode() if isinstance(raw_key, bytes) else str(raw_key)
            kind, _, rest = key.partition(":")
            value = float(raw_value)
            if kind == "d":
                b.decisions[rest] = int(value)
            elif kind == "r":
                b.rewards[rest] = value
            elif kind == "v":
                policy, _, index = rest.rpartition(":")
                b.values.setdefault(policy, [0.0, 0.0, 0.0])[int(index)] = value
        series.points.setdefault(point, {})[minute] = b
    return series
