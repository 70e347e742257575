"""`tailor learn`: the one learner of Redis mode.

It holds a leadership lease (a second `tailor learn` waits as a hot standby and takes over when the
lease lapses), closes the reward windows of every shard, learns the decisions handed off on the learn
streams, and publishes snapshots of every changed model together with the stream offsets they cover.
A new leader starts from the published models and replays the streams from the published offsets, so
a crash anywhere loses nothing and learns nothing twice; entries are trimmed only once a published
model covers them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

import redis
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from policies import VWPolicy
from server.catalogs import Catalog, CatalogError, load_catalog_dir
from server.core import LearnConfig, Metrics, RateLimitedLog, Unavailable
from server.state import redis_settings_problems
from server.state.decision_log import LearnEntry, RedisDecisionLog
from server.state.models import LearnedActions, RedisModelStore, Snapshot, policy_bytes, policy_from_bytes

from ._learner import learn_example
from ._lease import LeaderLease

log = logging.getLogger("tailor.learn")

_CLOSE_EVERY_SECONDS = 0.1
_RETRY_SECONDS = 0.5  # after Redis failed under the learner
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
        self.leader = Gauge("tailor_learner_leader", "1 while this learner holds the lease.", registry=self.registry)
        self.catalogs: dict[str, Catalog] = load_catalog_dir(config.catalogs)
        self.client = aioredis.Redis.from_url(config.redis_url)
        self.decisions = RedisDecisionLog(self.client, config.redis_prefix, config.redis_shards)
        self.store = RedisModelStore(self.client, config.redis_prefix)
        self.lease = LeaderLease(self.client, self.store.leader_key, config.lease_seconds)
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

    async def measure_lag(self) -> None:
        """Count what waits for this leader: windows past due, and stream entries after its offsets (entries
        up to the offsets stay until the next publish trims them, and are subtracted)."""
        waiting, oldest = 0, None
        for shard in await self.decisions.backlog(self.offsets, time.time()):
            read = self._read_since_trim.get(shard.stream, 0) + (1 if shard.stream in self.offsets else 0)
            waiting += shard.past_due + max(0, shard.stream_length - read)
            if shard.oldest is not None and (oldest is None or shard.oldest < oldest):
                oldest = shard.oldest
        self._waiting = (waiting, oldest)

    def request_reload(self) -> None:
        """Re-read the catalogs (SIGHUP) at the next turn of the learning loop, after publishing what is learned."""
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
        """Try for the lease once; lead until it is lost or `stop` is set."""
        if await self.lease.acquire():
            log.info("leading (token %s)", self.lease.token[:8], extra={"event": "leader_acquired"})
            self.leader.set(1)
            try:
                await self._lead(stop)
            finally:
                self.leader.set(0)
                self._waiting = (0, None)  # the next leader reports the backlog
                self.models.clear()
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=min(1.0, self.config.lease_seconds / 3))

    async def _lead(self, stop: asyncio.Event) -> None:
        await self._load_published()
        self._read_since_trim = {}
        renew_every = self.config.lease_seconds / 3
        last_renew = last_publish = last_close = last_lag = time.monotonic()
        while not stop.is_set():
            now = time.monotonic()
            if now - last_renew >= renew_every:
                if not await self.lease.renew():
                    log.warning("lost the lease; standing by", extra={"event": "leader_lost"})
                    return
                last_renew = now
            if now - last_close >= _CLOSE_EVERY_SECONDS:  # windows close on time to within 0.1 s
                await self.decisions.close_windows(time.time())
                last_close = now
            if now - last_lag >= _LAG_EVERY_SECONDS:
                await self.measure_lag()
                last_lag = now
            entries = await self.decisions.read_learnable(self.offsets, self.config.batch)
            for entry in entries:
                self._learn(entry)
            if self._reload:
                self._reload = False
                if not await self.publish():
                    log.warning("publish refused: no longer the leader", extra={"event": "leader_lost"})
                    return
                self._reload_catalogs()
                await self._load_published()  # models for the new catalogs, from what was just published
            if now - last_publish >= self.config.publish_interval_seconds:
                if not await self.publish():
                    log.warning("publish refused: no longer the leader", extra={"event": "leader_lost"})
                    return
                last_publish = now
            if not entries:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=0.05)
        await self.publish()  # graceful stop: what was learned is published
        await self.lease.release()
        log.info("released the lease", extra={"event": "leader_released"})

    async def _load_published(self) -> None:
        """Start from the published models and the offsets they cover (fresh models where none match)."""
        published = await self.store.published()
        self.offsets = await self.store.offsets()
        self.models = {}
        for name, catalog in self.catalogs.items():
            model = published.get(name)
            # Keys the catalog leaves unset keep the published model's flags: an upgrade resumes it.
            spec = catalog.policy.learning_spec([model.built_with] if model is not None else [])
            fingerprint = spec.fingerprint()
            blob = await self.store.blob(model) if model and model.fingerprint == fingerprint else None
            ids, until = catalog.action_ids, catalog.policy.new_action_floor.until_learned
            if model is not None and blob is not None:
                actions = LearnedActions.from_doc(model.actions, ids, until)
                policy, seq = policy_from_bytes(spec, blob), model.seq
            else:
                policy, seq, actions = VWPolicy(spec), 0, LearnedActions.established(ids, until)
            self.models[name] = _Model(name, fingerprint, policy, seq, actions, catalog.baseline_action)
        seqs = {m.decision_point: m.seq for m in self.models.values()}
        log.info("resuming from %s", seqs, extra={"event": "models_loaded", "seqs": seqs})

    def _reload_catalogs(self) -> None:
        try:
            self.catalogs = load_catalog_dir(self.config.catalogs)
        except CatalogError as err:
            log.error(
                "catalog reload failed; keeping the current catalogs: %s",
                "; ".join(err.problems),
                extra={"event": "catalog_reload_failed", "problems": err.problems},
            )
            return
        log.info(
            "catalogs reloaded: %s",
            ", ".join(sorted(self.catalogs)),
            extra={"event": "catalogs_reloaded", "decision_points": sorted(self.catalogs)},
        )

    def _learn(self, entry: LearnEntry) -> None:
        self.offsets[entry.stream] = entry.entry_id
        self._read_since_trim[entry.stream] = self._read_since_trim.get(entry.stream, 0) + 1
        model = self.models.get(entry.record.decision_point)
        policy, baseline = (model.policy, model.baseline) if model is not None else (None, None)
        if learn_example(policy, entry.record, entry.reward, entry.source, self.metrics, baseline):
            assert model is not None
            model.changed += 1
            model.actions.learned(entry.record.decision.action_id)

    async def publish(self) -> bool:
        """Publish every changed model with the offsets it covers; then trim what they cover."""
        changed = [m for m in self.models.values() if m.changed]
        if not changed:
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
        if not await self.store.publish(self.lease.token, snapshots, dict(self.offsets)):
            return False
        each = (time.perf_counter() - started) / len(changed)
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
        await self.client.aclose()
        if self._http is not None:
            self._http.shutdown()  # type: ignore[attr-defined]
