"""`tailor learn`: the learners of Redis mode, any number of them, sharing the decision points.

Each decision point is learned by the one learner that holds its lease (`_lease.DecisionPointLeases`: every
learner takes its fair share, so adding a learner or killing one moves decision points within the lease
time). For the decision points it holds, a learner closes the reward windows in every shard, learns the
decisions handed off on their learn streams, and publishes snapshots of every changed model together with
the stream offsets they cover. A learner that takes a decision point starts from its published model and
replays its streams from the published offsets, so a crash anywhere loses nothing and learns nothing
twice; entries are trimmed only once a published model covers them.

Before anything else a learner brings the Redis key layout to the present (`_upgrade`: layout 1, one
lease and per-shard streams mixing decision points, becomes layout 2; see `server.state.decision_log`),
and it keeps moving what replicas of the earlier release may still write in layout 1, so a rolling
upgrade loses nothing.

It learns the catalogs of the catalog store (which its catalog directory seeds, as every replica's does)
and follows the store's changes within a poll (`catalog_poll_seconds`): a changed catalog is published
for, then its model is kept, resumed or started by its learning flags. It also applies the model commands
(import, reset) that replicas queue through AdminService, publishing each result with the model.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import redis
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from policies import VWPolicy
from server.catalogs import Catalog, CatalogError, catalog_dir_fingerprint, load_catalog_dir
from server.core import LearnConfig, Metrics, RateLimitedLog, Unavailable
from server.state import redis_close_pipelines, redis_connect, redis_settings_problems
from server.state.catalogs import AuditEvent, CatalogDirectory, RedisCatalogStore, served_catalogs
from server.state.decision_log import LAYOUT, LearnEntry, RedisDecisionLog
from server.state.evidence import Pseudonymizer, pack, redis_installation_key, stream_key
from server.state.models import (
    DecisionLines,
    LearnedActions,
    ModelCommand,
    RedisModelStore,
    Snapshot,
    policy_bytes,
    policy_from_bytes,
)

from ._evidence import EvidenceRecorder
from ._learner import learn_example
from ._lease import LEGACY_LEADER_BLOCK, DecisionPointLeases
from ._series import ActionSeries, flush_to_redis

log = logging.getLogger("tailor.learn")

_CLOSE_EVERY_SECONDS = 0.1
_RETRY_SECONDS = 0.5  # after Redis failed under the learner
_INTRODUCED_SECONDS = 0.3  # after a learner's first turn: long enough for learners started with it to announce
_LAG_EVERY_SECONDS = 2.0  # how often the leader measures its backlog (a few cheap reads per shard)


@dataclass(slots=True)
class _Model:
    decision_point: str
    fingerprint: str
    policy: VWPolicy
    seq: int
    actions: LearnedActions
    baseline: str | None = None
    changed: int = 0


class SharedLearner:
    def __init__(self, config: LearnConfig, registry: CollectorRegistry | None = None) -> None:
        self.config = config
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = Metrics(self.registry)
        self._limited = RateLimitedLog(log, seconds=10.0)
        self._published = RateLimitedLog(log, seconds=30.0)  # a publish a second under load: one line per 30 s
        self.leader = Gauge(
            "tailor_learner_leader",
            "1 while this learner holds the lease of at least one decision point.",
            registry=self.registry,
        )
        self.held = Gauge(
            "tailor_learner_decision_points", "Decision points whose lease this learner holds.", registry=self.registry
        )
        self._directory_catalogs: dict[str, Catalog] | None = load_catalog_dir(config.catalogs)  # to apply
        self._directory_fingerprint = catalog_dir_fingerprint(config.catalogs)
        self.client = redis_connect(config.redis_url, config.redis_cluster, config.redis_timeout_seconds)
        self.decisions = RedisDecisionLog(self.client, config.redis_prefix, config.redis_shards)
        self.store = RedisModelStore(self.client, config.redis_prefix)
        self.catalog_store = RedisCatalogStore(self.client, config.redis_prefix)
        self.directory = CatalogDirectory(self.catalog_store)
        self.catalogs: dict[str, Catalog] = {}  # the store's, as of `self._catalog_epoch`
        self._catalog_versions: dict[str, int] = {}
        self._catalog_epoch = -1
        self.series = ActionSeries(track_deltas=True)  # the console's series, flushed to Redis after each publish
        # The decision log's lines of what was learned since the last publish, written with it (exactly once).
        self._lines: list[bytes] = []  # compressed (`pack`): Redis holds days of them
        self.evidence: EvidenceRecorder | None = None
        self.leases = DecisionPointLeases(self.client, self.store, config.lease_seconds)
        self.points: list[str] = []  # the decision points this learner leads, sorted
        self._upgraded = False
        self._legacy_offsets: dict[str, str] = {}  # layout 1's published offsets, for `migrate_layout_1`
        self.models: dict[str, _Model] = {}
        self.offsets: dict[str, str] = {}
        self.metrics_port: int | None = None
        self._http: object | None = None
        self._reload = False
        # Learner lag (leader only): stream entries read since each stream was last trimmed, and the last
        # measurement as (decisions waiting, since when the oldest waits).
        self._read_since_trim: dict[str, int] = {}
        self._waiting: tuple[int, float | None] = (0, None)
        self.metrics.add_learner_lag_collector(self._lag)

    def _lag(self) -> tuple[int, float]:
        waiting, since = self._waiting
        return waiting, 0.0 if since is None else max(0.0, time.time() - since)

    async def measure_lag(self, decision_points: Sequence[str] | None = None) -> None:
        """Count what waits for this learner in its decision points (or those given): windows past due, and
        stream entries after its offsets (entries up to the offsets stay until the next publish trims them, and
        are subtracted)."""
        waiting, oldest = 0, None
        points = self.points if decision_points is None else decision_points
        for shard in await self.decisions.backlog(self.offsets, time.time(), points):
            read = self._read_since_trim.get(shard.stream, 0) + (1 if shard.stream in self.offsets else 0)
            waiting += shard.past_due + max(0, shard.stream_length - read)
            if shard.oldest is not None and (oldest is None or shard.oldest < oldest):
                oldest = shard.oldest
        self._waiting = (waiting, oldest)

    def request_reload(self) -> None:
        """Re-read the catalog directory (SIGHUP) and apply what changed in it to the store, at the next turn of
        the loop; the store's catalogs are then learned like any change of the store."""
        self._reload = True

    def start_metrics(self) -> None:
        if self.config.metrics_port is not None:
            server, _ = start_http_server(self.config.metrics_port, registry=self.registry)
            self._http = server
            self.metrics_port = server.server_port

    async def run(self, stop: asyncio.Event) -> None:
        """Wait for the lease, lead until it is lost or `stop` is set, and wait again."""
        with contextlib.suppress(redis.RedisError, OSError):  # unreachable: the lease loop reports it
            for problem in await redis_settings_problems(self.client):
                log.warning("%s", problem, extra={"event": "redis_settings_warning"})
        while not stop.is_set():
            try:
                await self._term(stop)
            except (Unavailable, redis.RedisError, OSError) as err:
                # Redis restarting or unreachable: never a dead learner. What was learned but not published is
                # dropped with the models and learned again from the published offsets on the next term.
                self._limited.warning(
                    "redis", "Redis unreachable (%s); standing by, retrying", err, extra={"event": "redis_unavailable"}
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=_RETRY_SECONDS)

    async def _term(self, stop: asyncio.Event) -> None:
        """Apply the catalog directory if it is new or changed; bring the key layout up to date; take this
        learner's share of the decision points; lead them until a lease is lost or `stop` is set."""
        await self._directory_turn()
        if await self._upgrade():
            await self._read_catalogs()
            turn = await self.leases.turn(sorted(self.catalogs))
            if turn.surplus:  # nothing learned of them in this term yet: hand them back at once
                await self.leases.release(turn.surplus)
        if self.leases.held:
            self._set_points()
            log.info(
                "leading %s (token %s)",
                self.points,
                self.leases.token[:8],
                extra={"event": "leader_acquired", "decision_points": self.points},
            )
            try:
                await self._lead(stop)
            finally:
                self._lines.clear()  # with the unpublished learning: the next leader writes them from the streams
                self.leader.set(0)
                self.held.set(0)
                self._waiting = (0, None)  # the next leader reports the backlog
                for model in self.models.values():
                    model.policy.close()
                self.models.clear()
        else:  # soon after its first turn (which only announces it), then a third of the lease time
            wait = _INTRODUCED_SECONDS if self.leases.turns == 1 else min(1.0, self.config.lease_seconds / 3)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=wait)

    def _set_points(self) -> None:
        self.points = sorted(self.leases.held)
        self.decisions.decision_points = self.points
        self.leader.set(1 if self.points else 0)
        self.held.set(len(self.points))

    async def _upgrade(self) -> bool:
        """Bring the key layout to `LAYOUT` once (layout 1 -> 2: see `server.state.decision_log`); False while a
        learner of an earlier release leads (it holds layout 1's lease: stop it, and this learner goes on when
        that lease lapses). Layout 1's lease key then holds `LEGACY_LEADER_BLOCK` for good, so such a learner
        started later waits as a standby."""
        if self._upgraded:
            return True
        holder = await self.client.get(self.store.leader_key)
        if holder is not None and _text(holder) != LEGACY_LEADER_BLOCK:
            self._limited.warning(
                "legacy",
                "a tailor learn of an earlier release holds the learning lease; stop it to upgrade: this learner "
                "starts once its lease lapses",
                extra={"event": "upgrade_waiting"},
            )
            return False
        await self.client.set(self.store.leader_key, LEGACY_LEADER_BLOCK)
        layout = await self.client.get(self.store.layout_key)
        self._legacy_offsets = await self.store.offsets()
        if layout is None or int(_text(layout)) < LAYOUT:
            await self.decisions.migrate_layout_1(self._legacy_offsets)
            await self.client.set(self.store.layout_key, LAYOUT)
            log.info("upgraded the Redis key layout to %d", LAYOUT, extra={"event": "layout_upgraded"})
        self._upgraded = True
        return True

    async def _lead(self, stop: asyncio.Event) -> None:
        if self.config.decision_log and self.evidence is None:
            key: bytes | None = None
            if self.config.decision_log_pseudonymize:
                key = (
                    bytes.fromhex(self.config.decision_log_key)
                    if self.config.decision_log_key
                    else await redis_installation_key(self.client, self.config.redis_prefix)
                )
            lines = self._lines
            self.evidence = EvidenceRecorder(lambda line: lines.append(pack(line)), Pseudonymizer(key), self.metrics)
        await self._load_published()
        self._read_since_trim = {}
        renew_every = self.config.lease_seconds / 3
        last_renew = last_publish = last_close = last_lag = last_poll = time.monotonic()
        while not stop.is_set():
            now = time.monotonic()
            if now - last_renew >= renew_every:
                turn = await self.leases.turn(sorted(self.catalogs))
                if turn.lost:
                    log.warning(
                        "lost the lease of %s; standing by",
                        sorted(turn.lost),
                        extra={"event": "leader_lost", "decision_points": sorted(turn.lost)},
                    )
                    return
                if turn.taken or turn.surplus:
                    if not await self.publish():  # what it learned so far, before the set of its models changes
                        log.warning("publish refused: no longer the leader", extra={"event": "leader_lost"})
                        return
                    await self.leases.release(turn.surplus)
                    self._set_points()
                    log.info(
                        "now leading %s (took %s, handed back %s; %d learners)",
                        self.points,
                        sorted(turn.taken),
                        sorted(turn.surplus),
                        turn.learners,
                        extra={"event": "leases_moved", "decision_points": self.points},
                    )
                    if not self.points:
                        return
                    await self._load_published()
                last_renew = now
            if now - last_close >= _CLOSE_EVERY_SECONDS:  # windows close on time to within 0.1 s
                await self.decisions.close_windows(time.time(), decision_points=self.points)
                if not await self._run_commands():
                    log.warning("publish refused: no longer the leader", extra={"event": "leader_lost"})
                    return
                last_close = now
            if now - last_lag >= _LAG_EVERY_SECONDS:
                await self.measure_lag()
                # what replicas of the earlier release may still write in layout 1, during a rolling upgrade
                await self.decisions.migrate_layout_1(self._legacy_offsets)
                last_lag = now
            entries = await self.decisions.read_learnable(self.offsets, self.config.batch, self.points)
            for entry in entries:
                self._learn(entry)
            if now - last_poll >= self.config.catalog_poll_seconds:
                last_poll = now
                await self._directory_turn()
                if await self.catalog_store.epoch() != self._catalog_epoch:
                    if not await self.publish():
                        log.warning("publish refused: no longer the leader", extra={"event": "leader_lost"})
                        return
                    await self._read_catalogs()
                    await self._load_published()  # models for the new catalogs, from what was just published
                    last_renew = 0.0  # new or deleted decision points: share them at once
            if now - last_publish >= self.config.publish_interval_seconds:
                if not await self.publish():
                    log.warning("publish refused: no longer the leader", extra={"event": "leader_lost"})
                    return
                last_publish = now
            if not entries:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=0.05)
        await self.publish()  # graceful stop: what was learned is published
        await self.leases.release((), leave=True)
        log.info("released the leases", extra={"event": "leader_released"})

    async def _load_published(self) -> None:
        """Start from the published models and the offsets they cover; a catalog whose learning flags are those
        of a kept model (rolled back across a flags change) resumes that one; fresh models for the rest."""
        published = await self.store.published()
        kept = await self.store.kept()
        mine = {self.store.commands_key(p) for p in self.points}
        mine.update(stream for p in self.points for stream in self.decisions.streams(p))
        self.offsets = {stream: at for stream, at in (await self.store.offsets()).items() if stream in mine}
        for previous in self.models.values():
            previous.policy.close()
        self.models = {}
        for name, catalog in self.catalogs.items():
            if name not in self.leases.held:
                continue
            model = published.get(name)
            stored = ([model] if model is not None else []) + kept.get(name, [])
            # Keys the catalog leaves unset keep the published model's flags: an upgrade resumes it.
            spec = catalog.policy.learning_spec([m.built_with for m in stored])
            fingerprint = spec.fingerprint()
            source = next((m for m in stored if m.fingerprint == fingerprint), None)
            blob = await self.store.blob(source) if source is not None else None
            ids, until = catalog.action_ids, catalog.policy.new_action_floor.until_learned
            if source is not None and blob is not None:
                actions = LearnedActions.from_doc(source.actions, ids, until)
                policy, seq = policy_from_bytes(spec, blob), source.seq
            else:
                policy, seq, actions = VWPolicy(spec), 0, LearnedActions.established(ids, until)
            served = _Model(name, fingerprint, policy, seq, actions, catalog.baseline_action)
            if source is not None and source is not model:
                served.changed = 1  # a kept model comes back: publish it so the replicas serve it too
            self.models[name] = served
        seqs = {m.decision_point: m.seq for m in self.models.values()}
        log.info("resuming from %s", seqs, extra={"event": "models_loaded", "seqs": seqs})

    def _read_directory(self) -> None:
        """Re-read the catalog directory (SIGHUP); an invalid one is not applied."""
        try:
            self._directory_catalogs = load_catalog_dir(self.config.catalogs)
        except CatalogError as err:
            self.metrics.catalog_reloads.labels("error").inc()
            log.error(
                "catalog reload failed; the catalog store keeps its catalogs: %s",
                "; ".join(err.problems),
                extra={"event": "catalog_reload_failed", "problems": err.problems},
            )

    async def _directory_turn(self) -> None:
        """Apply the catalog directory to the store if it is new (start), or was changed or SIGHUP asked."""
        fingerprint = catalog_dir_fingerprint(self.config.catalogs)
        if self._reload or fingerprint != self._directory_fingerprint:
            self._reload = False
            self._directory_fingerprint = fingerprint
            self._read_directory()
        if self._directory_catalogs is None:
            return
        events = await self.directory.apply(self._directory_catalogs)
        self._directory_catalogs = None
        self.metrics.catalog_reloads.labels("ok").inc()
        for event in events:
            self.metrics.catalog_changes.labels(event.decision_point, "directory").inc()

    async def _read_catalogs(self) -> None:
        """Learn the catalog store's current catalogs."""
        epoch = await self.catalog_store.epoch()
        if epoch < self._catalog_epoch:  # Redis lost the store: seed it again (as the replicas do)
            log.warning(
                "the catalog store lost its state; seeding it from the catalog directory again",
                extra={"event": "catalog_store_lost"},
            )
            self.directory.forget()
            self._reload = True
            await self._directory_turn()
            epoch = await self.catalog_store.epoch()
        current = await self.catalog_store.current()
        self.catalogs = served_catalogs(current)
        self._catalog_versions = {name: v.version for name, v in current.items()}
        self._catalog_epoch = epoch
        log.info(
            "learning the catalogs %s",
            self._catalog_versions,
            extra={"event": "catalogs_reloaded", "decision_points": sorted(self.catalogs)},
        )

    async def _run_commands(self) -> bool:
        """Apply the model commands queued since the published offset, then publish at once with their results;
        False if the publish was refused (no longer the leader)."""
        commands, now = await self.store.commands(self.offsets, self.points)
        if not commands:
            return True
        results: dict[str, dict[str, object]] = {}
        events: list[dict[str, object]] = []
        for command in commands:
            self.offsets[command.stream] = command.entry_id
            if now > command.deadline:
                self.metrics.model_commands.labels(command.action, "expired").inc()
                continue  # its caller has been told it was not applied
            outcome = self._apply_command(command)
            self.metrics.model_commands.labels(command.action, "applied" if "version" in outcome else "rejected").inc()
            results[command.token] = outcome
            if "version" in outcome:
                version = self._catalog_versions.get(command.decision_point, 0)
                note = str(outcome.pop("note"))
                event = AuditEvent(now, command.actor, command.action, command.decision_point, version, "", note)  # type: ignore[arg-type]
                events.append(event.to_json())
        return await self.publish(results, events)

    def _apply_command(self, command: ModelCommand) -> dict[str, object]:
        model, catalog = self.models.get(command.decision_point), self.catalogs.get(command.decision_point)
        if model is None or catalog is None:
            return {"error": f"decision point {command.decision_point!r} is not served any more"}
        spec = model.policy.spec
        if command.action == "import_model":
            try:
                policy = policy_from_bytes(spec, command.data)
            except Exception:
                return {"error": f"the data is not a VW model of these learning flags ({spec.vw_args()})"}
            note = f"model {model.fingerprint}.{model.seq + 1} imported ({len(command.data)} bytes)"
        elif command.action == "reset_model":
            policy = VWPolicy(spec)
            note = f"model reset: {model.fingerprint}.{model.seq + 1} learns from scratch"
        else:
            return {"error": f"unknown model command {command.action!r}"}
        model.policy.close()
        model.policy = policy
        model.actions = LearnedActions.established(catalog.action_ids, catalog.policy.new_action_floor.until_learned)
        model.changed += 1
        log.info(
            "%s: %s by %s",
            command.decision_point,
            note,
            command.actor,
            extra={"event": "model_command", "decision_point": command.decision_point, "action": command.action},
        )
        return {"version": f"{model.fingerprint}.{model.seq + 1}", "note": note}

    def _learn(self, entry: LearnEntry) -> None:
        self.offsets[entry.stream] = entry.entry_id
        self._read_since_trim[entry.stream] = self._read_since_trim.get(entry.stream, 0) + 1
        if entry.unactivated:  # never learned; logged with _skipLearn
            self.metrics.decisions_expired_unactivated.labels(entry.record.decision_point).inc()
            if self.evidence is not None:
                self.evidence.unactivated(entry.record)
            return
        model = self.models.get(entry.record.decision_point)
        policy, baseline = (model.policy, model.baseline) if model is not None else (None, None)
        done = learn_example(policy, entry.record, entry.reward, entry.source, self.metrics, baseline, self.series)
        if done == "learned":
            assert model is not None
            model.changed += 1
            model.actions.learned(entry.record.decision.action_id)
        if done != "dropped" and self.evidence is not None:
            self.evidence.learned(entry.record, entry.reward, entry.source)

    async def publish(
        self, results: dict[str, dict[str, object]] | None = None, events: list[dict[str, object]] | None = None
    ) -> bool:
        """Publish every changed model with the offsets it covers (and model commands' results and audit events);
        then trim what they cover."""
        changed = [m for m in self.models.values() if m.changed]
        if not changed and not results and not self._lines:
            return True
        started = time.perf_counter()
        snapshots = [
            Snapshot(
                m.decision_point,
                m.fingerprint,
                m.seq + 1,
                policy_bytes(m.policy),
                m.policy.spec.vw_args(),
                m.actions.to_doc(),
            )
            for m in changed
        ]
        audit = (self.catalog_store.keys["audit"], self.catalog_store.audit_kept, events or [])
        retention = time.time() - self.config.decision_log_retention_hours * 3600
        lines = DecisionLines(
            stream_key(self.config.redis_prefix), self._lines, retention, self.config.decision_log_max_entries
        )
        leases = self.leases.keys(self.points)
        if not await self.store.publish(
            self.leases.token, leases, snapshots, dict(self.offsets), results, audit, lines
        ):
            return False
        self._lines.clear()
        self.series.points.clear()  # the learner keeps only what it has not flushed yet
        try:
            await flush_to_redis(self.client, self.config.redis_prefix, self.series)
        except (redis.RedisError, OSError):  # the console's series only: the deltas are lost, learning goes on
            log.warning("the console's series were not written to Redis", exc_info=True, extra={"event": "series"})
        each = (time.perf_counter() - started) / max(1, len(changed))
        for m in changed:
            m.seq += 1
            m.changed = 0
            self.metrics.snapshots.labels(m.decision_point).inc()
            self.metrics.snapshot_duration.observe(each)
        seqs = {m.decision_point: m.seq for m in changed}
        self._published.log(
            logging.INFO, "publish", "published %s", seqs, extra={"event": "models_published", "seqs": seqs}
        )
        async with self.client.pipeline(transaction=False) as pipe:
            for stream, entry_id in self.offsets.items():
                pipe.xtrim(stream, minid=entry_id, approximate=False)  # exact: the lag count relies on it
            await pipe.execute()
        self._read_since_trim = {}
        return True

    async def close(self) -> None:
        await redis_close_pipelines(self.client)
        await self.client.aclose()
        if self._http is not None:
            self._http.shutdown()  # type: ignore[attr-defined]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
