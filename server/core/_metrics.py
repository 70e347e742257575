"""Every Prometheus metric Tailor exports, built on an injected registry.

Names carry the `tailor_` prefix and base units; labels are bounded (decision points come from the
catalogs, statuses and methods from the contract); no session or event id is ever a label.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable
from itertools import accumulate

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

_LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        # Served decisions and their handler time are counted on every Decide: plain numbers the event loop
        # updates without a lock, exported at scrape time (see DecideStats).
        self._decide_stats: dict[str, DecideStats] = {}
        registry.register(_DecideCollector(self._decide_stats))
        self.decisions_replayed = Counter(
            "tailor_decisions_replayed_total",
            "Decide calls answered from the decision log because the event id was seen before.",
            ["decision_point"],
            registry=registry,
        )
        self.decisions_floored = Counter(
            "tailor_decisions_floored_total",
            "Decisions whose probabilities were raised by the new-action exploration floor.",
            ["decision_point"],
            registry=registry,
        )
        self.decisions_unlearnable = Counter(
            "tailor_decisions_unlearnable_total",
            "Decisions served but not logged for learning because the decision log was full.",
            ["decision_point"],
            registry=registry,
        )
        self.decisions_evicted = Counter(
            "tailor_decisions_evicted_total",
            "Learned decisions forgotten before their retention ended to make room in a full decision log.",
            ["decision_point"],
            registry=registry,
        )
        self.rewards = Counter(
            "tailor_rewards_total", "Rewards received, by join status.", ["status"], registry=registry
        )
        self.fail_open = Counter(
            "tailor_decide_fail_open_total",
            "Decide steps skipped because shared state (Redis) was unreachable; the decision was still served.",
            ["step"],
            registry=registry,
        )
        self.redis_round_trips = Counter(
            "tailor_redis_round_trips_total",
            "Round trips to Redis on the Decide path (one pipelined read, one pipelined write per decision).",
            ["op"],
            registry=registry,
        )
        self.rule_rewards = Counter(
            "tailor_rule_rewards_total",
            "Rewards derived from session events by catalog reward rules, by join status.",
            ["decision_point", "status"],
            registry=registry,
        )
        self.session_events = Counter(
            "tailor_session_events_total",
            "Behaviour events received, by result (accepted, duplicate, rejected).",
            ["result"],
            registry=registry,
        )
        self.session_events_rejected = Counter(
            "tailor_session_events_rejected_total",
            "Behaviour events rejected, by reason.",
            ["reason"],
            registry=registry,
        )
        self.sessions_deleted = Counter(
            "tailor_sessions_deleted_total", "Sessions erased by DeleteSession.", registry=registry
        )
        self._learn_counters: dict[tuple[str, str], tuple[Counter, Counter]] = {}
        self._arm_counters: dict[tuple[str, str], tuple[Counter, Counter, Counter]] = {}
        self.learned = Counter(
            "tailor_learned_examples_total",
            "Decisions learned, by where the reward came from (reported, or the default at window close).",
            ["decision_point", "source"],
            registry=registry,
        )
        self.reward_scaled = Counter(
            "tailor_learned_reward_scaled_total",
            "Sum of learned rewards rescaled to [0, 1] by the reward range; over learned examples, the mean reward.",
            ["decision_point"],
            registry=registry,
        )
        self.decisions_expired_unactivated = Counter(
            "tailor_decisions_expired_unactivated_total",
            "Deferred decisions dropped without being activated (never learned, by design).",
            ["decision_point"],
            registry=registry,
        )
        self.learn_errors = Counter(
            "tailor_learn_errors_total", "Examples VW refused to learn.", ["decision_point"], registry=registry
        )
        self.snapshots = Counter(
            "tailor_model_snapshots_total", "Model snapshots written.", ["decision_point"], registry=registry
        )
        self.snapshot_duration = Histogram(
            "tailor_model_snapshot_duration_seconds",
            "Time to write one model snapshot (Redis mode: to serialize and publish one, in tailor learn).",
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0),
            registry=registry,
        )
        self.rpc_errors = Counter(
            "tailor_rpc_errors_total", "RPCs that ended with an error status.", ["method", "code"], registry=registry
        )
        self.catalog_reloads = Counter(
            "tailor_catalog_reloads_total", "Catalog reloads, by result.", ["result"], registry=registry
        )
        self.rpcs_rejected = Counter(
            "tailor_rpcs_rejected_total",
            "Calls refused before their handler ran, by reason: missing_key, malformed, unknown_key, "
            "permission_denied, not_local (protected mode), overload (--max-in-flight), deadline (already passed), "
            "undecodable (bytes that are not the request message).",
            ["reason"],
            registry=registry,
        )
        self.rpcs_in_flight = Gauge(
            "tailor_rpcs_in_flight",
            "Calls running now (health checks excluded); an open stream counts.",
            registry=registry,
        )
        self.credential_reloads = Counter(
            "tailor_credential_reloads_total",
            "Re-reads of the API key file and the TLS certificates, by what and result.",
            ["what", "result"],
            registry=registry,
        )
        self.api_keys = Gauge(
            "tailor_api_keys", "API keys loaded from --api-keys (0: none configured).", registry=registry
        )
        self.corrupt_state = Counter(
            "tailor_corrupt_state_total",
            "Files found torn or corrupt at start-up and set aside: model snapshots (the previous one is used) and "
            "retained decisions (the line is skipped).",
            ["what"],
            registry=registry,
        )
        self.pending_restored = Counter(
            "tailor_pending_decisions_restored_total",
            "Pending decisions restored from the data directory at start-up.",
            registry=registry,
        )
        self.decision_log_size = Gauge(
            "tailor_decision_log_decisions", "Decisions retained in the decision log.", registry=registry
        )
        self.join_backlog = Gauge(
            "tailor_join_backlog_decisions",
            "Decisions waiting for a reward or for their window to close.",
            registry=registry,
        )
        self.learn_queue = Gauge(
            "tailor_learn_queue_examples", "Joined examples waiting to be learned.", registry=registry
        )
        # Learning health: per learned decision, an IPS term of each policy's value (reward scaled to [0, 1]),
        # with squares and counts, so PromQL derives means and confidence intervals summed over instances.
        value_labels = ["decision_point", "policy"]
        self.value_terms = Counter(
            "tailor_value_estimate_terms",
            "Learned decisions in each policy's value estimate (policy: live, uniform, baseline).",
            value_labels,
            registry=registry,
        )
        self.value_sum = Counter(
            "tailor_value_estimate",
            "Sum of IPS terms of each policy's value: live = the scaled reward; uniform = reward / (K p); "
            "baseline = reward / p when the baseline action was chosen, else 0.",
            value_labels,
            registry=registry,
        )
        self.value_squares = Counter(
            "tailor_value_estimate_squares",
            "Sum of squared IPS terms (for the variance and the interval of each estimate).",
            value_labels,
            registry=registry,
        )
        self._value_estimates: dict[str, ValueEstimates] = {}
        self.catalog_changes = Counter(
            "tailor_catalog_changes_total",
            "Catalog versions made, by origin: directory (files applied), api (AdminService), rollback.",
            ["decision_point", "origin"],
            registry=registry,
        )
        self.apprentice_decisions = Counter(
            "tailor_apprentice_decisions_total",
            "Apprentice mode: decisions by whether the model's own choice agreed with the baseline action "
            '(agreement rate = agreed="true" / all).',
            ["decision_point", "agreed"],
            registry=registry,
        )
        self.arm_decisions = Counter(
            "tailor_arm_decisions_total",
            "Learned (or, holdout, held-out) decisions by arm: policy, apprentice, holdout. With the reward sums "
            "below, the lift of policy over holdout and its interval add up across replicas.",
            ["decision_point", "arm"],
            registry=registry,
        )
        self.arm_reward = Counter(
            "tailor_arm_reward_total",
            "Sum of the final rewards, scaled to [0, 1] by the reward range, of the decisions in "
            "tailor_arm_decisions_total.",
            ["decision_point", "arm"],
            registry=registry,
        )
        self.arm_reward_squares = Counter(
            "tailor_arm_reward_squares_total",
            "Sum of the squared scaled rewards of the decisions in tailor_arm_decisions_total (for the variance).",
            ["decision_point", "arm"],
            registry=registry,
        )
        self.console_requests = Counter(
            "tailor_console_requests_total",
            "Console HTTP requests by page and status code (pages: overview, point, edit, pause, history, rollback, "
            "audit, sessions, signin, signout, static, other).",
            ["page", "code"],
            registry=registry,
        )
        self.console_signins = Counter(
            "tailor_console_signins_total",
            "Console sign-in attempts by result: ok, unknown_key, no_role, expired_form.",
            ["result"],
            registry=registry,
        )
        self.decision_log_lines = Counter(
            "tailor_decision_log_lines_total",
            "Decisions written to the durable decision log (DSJSON), by outcome: reward, default (the window "
            "closed without one), unactivated (a deferred decision never activated: _skipLearn).",
            ["decision_point", "outcome"],
            registry=registry,
        )
        self.decision_log_errors = Counter(
            "tailor_decision_log_errors_total",
            "Learned decisions that could not be written to the decision log (logged with a traceback).",
            registry=registry,
        )
        self.model_commands = Counter(
            "tailor_model_commands_total",
            "Redis mode, `tailor learn`: model imports and resets queued by replicas, by result: applied, "
            "rejected (not a model of the flags, or the decision point is gone), expired (no learner took it in time).",
            ["action", "result"],
            registry=registry,
        )

        for result in ("ok", "unknown_key", "no_role", "expired_form"):
            self.console_signins.labels(result)
        for what in ("snapshot", "pending_decision", "catalog", "console_series"):
            self.corrupt_state.labels(what)
        for result in ("ok", "error"):
            self.catalog_reloads.labels(result)
            for what in ("keys", "tls"):
                self.credential_reloads.labels(what, result)
        for reason in (
            "missing_key",
            "malformed",
            "unknown_key",
            "permission_denied",
            "not_local",
            "overload",
            "deadline",
            "undecodable",
        ):
            self.rpcs_rejected.labels(reason)

    def learn_counters(self, decision_point: str, source: str) -> tuple[Counter, Counter]:
        """The learned-examples and scaled-reward series of a decision point, looked up once (the learner
        counts every example; `labels()` takes a lock and builds a key each call)."""
        key = (decision_point, source)
        found = self._learn_counters.get(key)
        if found is None:
            found = self._learn_counters[key] = (
                self.learned.labels(decision_point, source),
                self.reward_scaled.labels(decision_point),
            )
        return found

    def arm_counters(self, decision_point: str, arm: str) -> tuple[Counter, Counter, Counter]:
        """The per-arm decisions, reward and squared-reward series of a decision point, looked up once."""
        key = (decision_point, arm)
        found = self._arm_counters.get(key)
        if found is None:
            found = self._arm_counters[key] = (
                self.arm_decisions.labels(decision_point, arm),
                self.arm_reward.labels(decision_point, arm),
                self.arm_reward_squares.labels(decision_point, arm),
            )
        return found

    def value_estimates(self, decision_point: str) -> ValueEstimates:
        """The learning-health counters of a decision point, looked up once."""
        found = self._value_estimates.get(decision_point)
        if found is None:
            found = self._value_estimates[decision_point] = ValueEstimates(self, decision_point)
        return found

    def add_learner_lag_collector(self, read: Callable[[], tuple[int, float]]) -> None:
        """Export the learner's backlog, read at scrape time as (decisions waiting, age of the oldest in s)."""
        self.registry.register(_LearnerLagCollector(read))

    def decide_stats(self, decision_point: str) -> DecideStats:
        """The served-decisions counter and latency histogram of a decision point (created at zero)."""
        stats = self._decide_stats.get(decision_point)
        if stats is None:
            stats = self._decide_stats[decision_point] = DecideStats()
        return stats

    def touch_decision_point(self, name: str) -> None:
        """Create a decision point's series at zero, so rate() and increase() see their first increment."""
        self.decide_stats(name)
        for counter in (
            self.decisions_replayed,
            self.decisions_floored,
            self.decisions_unlearnable,
            self.decisions_evicted,
            self.decisions_expired_unactivated,
            self.learn_errors,
            self.reward_scaled,
            self.snapshots,
        ):
            counter.labels(name)
        for source in ("reward", "default"):
            self.learned.labels(name, source)
        for arm in ("policy", "apprentice", "holdout"):
            for counter in (self.arm_decisions, self.arm_reward, self.arm_reward_squares):
                counter.labels(name, arm)
        for agreed in ("true", "false"):
            self.apprentice_decisions.labels(name, agreed)
        self.value_estimates(name)

    def touch_methods(self, methods: Iterable[str]) -> None:
        """Create the INTERNAL error series of each RPC at zero (the one an alert watches for)."""
        for method in methods:
            self.rpc_errors.labels(method, "INTERNAL")

    def add_session_collector(self, read: Callable[[], tuple[int, int, int]]) -> None:
        """Export session store size and churn, read at scrape time as (sessions, evicted, expired)."""
        self.registry.register(_SessionCollector(read))

    def add_model_collector(self, read: Callable[[], Iterable[tuple[str, int, float, int, int]]]) -> None:
        """Export model version and age, read at scrape time from (decision_point, seq, snapshot_time, learned,
        catalog actions under the new-action floor)."""
        self.registry.register(_ModelCollector(read))


class ValueEstimates:
    """Progressive IPS estimates of three policies' value from one decision point's learned decisions: the live
    policy (on-policy: the reward itself), the uniform-random policy, and always showing the baseline action."""

    __slots__ = ("_baseline", "_live", "_uniform")

    def __init__(self, metrics: Metrics, decision_point: str) -> None:
        def series(policy: str) -> tuple[Counter, Counter, Counter]:
            return (
                metrics.value_terms.labels(decision_point, policy),
                metrics.value_sum.labels(decision_point, policy),
                metrics.value_squares.labels(decision_point, policy),
            )

        self._live, self._uniform, self._baseline = series("live"), series("uniform"), series("baseline")

    @staticmethod
    def _add(series: tuple[Counter, Counter, Counter], term: float) -> None:
        terms, total, squares = series
        terms.inc()
        total.inc(term)
        squares.inc(term * term)

    def add(self, reward: float, probability: float, candidates: int, baseline_chosen: bool | None) -> None:
        """One learned decision: `reward` scaled to [0, 1], the logged probability of the chosen action, the
        number of candidates, and whether the baseline action was chosen (None: it was not a candidate, so the
        baseline policy had no action here and the decision does not count towards its estimate)."""
        self._add(self._live, reward)
        if probability > 0 and candidates > 0:
            self._add(self._uniform, reward / (candidates * probability))
            if baseline_chosen is not None:
                self._add(self._baseline, reward / probability if baseline_chosen else 0.0)


class _LearnerLagCollector(Collector):
    def __init__(self, read: Callable[[], tuple[int, float]]) -> None:
        self._read = read

    def collect(self) -> Iterable[GaugeMetricFamily]:
        waiting, oldest = self._read()
        yield GaugeMetricFamily(
            "tailor_learner_waiting_decisions",
            "Decisions whose reward window has closed (or is past due) and that are not learned yet.",
            value=waiting,
        )
        yield GaugeMetricFamily(
            "tailor_learner_oldest_waiting_seconds",
            "How long the oldest of those decisions has waited to be learned (0 when none waits).",
            value=oldest,
        )


class _ModelCollector(Collector):
    def __init__(self, read: Callable[[], Iterable[tuple[str, int, float, int, int]]]) -> None:
        self._read = read

    def collect(self) -> Iterable[GaugeMetricFamily]:
        import time

        now = time.time()
        version = GaugeMetricFamily(
            "tailor_model_version", "Sequence number of the served model's version.", labels=["decision_point"]
        )
        age = GaugeMetricFamily(
            "tailor_model_age_seconds",
            "Seconds since the served model was last snapshotted (or created).",
            labels=["decision_point"],
        )
        unsaved = GaugeMetricFamily(
            "tailor_model_unsnapshotted_examples",
            "Examples learned since the last snapshot (lost on kill -9).",
            labels=["decision_point"],
        )
        floored = GaugeMetricFamily(
            "tailor_actions_under_floor",
            "Catalog actions the served model has learned too few times: Decide gives them the floor probability.",
            labels=["decision_point"],
        )
        for name, seq, saved_at, pending, under_floor in self._read():
            version.add_metric([name], seq)
            age.add_metric([name], max(0.0, now - saved_at))
            unsaved.add_metric([name], pending)
            floored.add_metric([name], under_floor)
        yield version
        yield age
        yield unsaved
        yield floored


class _SessionCollector(Collector):
    def __init__(self, read: Callable[[], tuple[int, int, int]]) -> None:
        self._read = read

    def collect(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        sessions, evicted, expired = self._read()
        yield GaugeMetricFamily("tailor_sessions", "Sessions with context in memory.", value=sessions)
        yield CounterMetricFamily(
            "tailor_sessions_evicted", "Sessions evicted because the session cap was reached.", value=evicted
        )
        yield CounterMetricFamily("tailor_sessions_expired", "Sessions dropped after their idle TTL.", value=expired)


class DecideStats:
    """Decisions served by one decision point and their handler time, as Decide records them.

    Updated only from the serving event loop, so plain numbers do (a prometheus_client Counter and
    Histogram take a lock each and scan the buckets in Python: ~2 µs a decision, against ~0.15 µs here).
    A scrape, from the metrics thread, copies the bucket list in one step, so the count it exports is
    always the sum of the buckets it exports."""

    __slots__ = ("buckets", "seconds")

    def __init__(self) -> None:
        self.buckets = [0] * (len(_LATENCY_BUCKETS) + 1)  # the last one is +Inf
        self.seconds = 0.0

    def observe(self, seconds: float) -> None:
        self.buckets[bisect_left(_LATENCY_BUCKETS, seconds)] += 1  # bucket i holds le=_LATENCY_BUCKETS[i]
        self.seconds += seconds


class _DecideCollector(Collector):
    def __init__(self, stats: dict[str, DecideStats]) -> None:
        self._stats = stats

    def collect(self) -> Iterable[CounterMetricFamily | HistogramMetricFamily]:
        served = CounterMetricFamily("tailor_decisions", "Decisions served.", labels=["decision_point"])
        latency = HistogramMetricFamily(
            "tailor_decide_latency_seconds",
            "Time to handle Decide, from parsed request to built response.",
            labels=["decision_point"],
        )
        for name, stats in list(self._stats.items()):
            buckets, seconds = list(stats.buckets), stats.seconds
            cumulative = list(accumulate(buckets))
            served.add_metric([name], cumulative[-1])
            bounds = [*(repr(b) for b in _LATENCY_BUCKETS), "+Inf"]
            latency.add_metric([name], list(zip(bounds, cumulative, strict=True)), seconds)
        yield served
        yield latency
