"""App wiring: builds the stores, models, learner and servicers, runs the gRPC server and its tasks.

Lifecycle: start (catalogs, models resumed from snapshots, pending decisions restored, health
SERVING) -> serve -> stop (health NOT_SERVING, drain in-flight RPCs, learn what is queued, snapshot
changed models, persist retained decisions, exit).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Iterable
from pathlib import Path
from typing import Any

import grpc
import redis.asyncio as aioredis
from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc
from grpc_reflection.v1alpha._async import ReflectionServicer
from prometheus_client import CollectorRegistry, start_http_server

from server.admin import CatalogAdmin, LocalModels, ModelAdmin, SharedModels
from server.api import AdminServicer, CallGuard, DecisionServicer, KeyFileError, KeyRing, ServerCertificates
from server.catalogs import Catalog, CatalogError, catalog_dir_fingerprint, load_catalog_dir
from server.console import ConsoleServer, ConsoleSources, build_console
from server.core import Metrics, RateLimitedLog, ServeConfig
from server.decisions import DecisionService
from server.learning import ActionSeries, EvidenceRecorder, Learner, RewardJoiner, read_from_redis
from server.sessions import SessionContext
from server.state import (
    DecideState,
    EmbeddedDecideState,
    RedisDecideState,
    read_json,
    redis_close_pipelines,
    redis_connect,
    redis_settings_problems,
    write_json_atomic,
)
from server.state.catalogs import (
    CatalogDirectory,
    CatalogStore,
    FileCatalogStore,
    RedisCatalogStore,
    served_catalogs,
)
from server.state.decision_log import DecisionLog, DecisionRecord, InMemoryDecisionLog, RedisDecisionLog
from server.state.evidence import FileEvidenceLog, Pseudonymizer, file_installation_key
from server.state.models import (
    FileModelStore,
    FollowedModelStore,
    ModelRegistry,
    RedisModelStore,
    ServedModel,
    policy_from_bytes,
)
from server.state.sessions import InMemorySessionStore, RedisSessionStore, SessionStore
from tailor.v1 import admin_service_pb2 as apb
from tailor.v1 import admin_service_pb2_grpc as apb_grpc
from tailor.v1 import decision_service_pb2 as pb
from tailor.v1 import decision_service_pb2_grpc as pb_grpc

log = logging.getLogger("tailor.server")
SERIES_SAVE_SECONDS = 300.0  # the console's series file is rewritten at most this often (and at stop)
REDIS_SERIES_SECONDS = 86400.0  # Redis mode: the console reads at most the last day of minutes
_follow_log = RateLimitedLog(log, seconds=10.0)
_catalog_log = RateLimitedLog(log, seconds=10.0)

SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["DecisionService"].full_name
ADMIN_SERVICE_NAME: str = apb.DESCRIPTOR.services_by_name["AdminService"].full_name
PENDING_FILE = "pending-decisions.jsonl"
_SWEEP_SECONDS = 0.05
#: The most a shutdown step may take beyond its grace before the shutdown goes on without it (a stop never hangs).
_STEP_SECONDS = 10.0


def _bind(server: grpc.aio.Server, address: str, credentials: grpc.ServerCredentials | None, what: str) -> int:
    """Bind a port; a taken or forbidden one is an OSError naming it (grpc says RuntimeError or port 0)."""
    try:
        if credentials is not None:
            port = server.add_secure_port(address, credentials)
        else:
            port = server.add_insecure_port(address)
    except RuntimeError:
        port = 0
    if port == 0:
        raise OSError(f"cannot bind {what} port {address}: in use by another process, or not permitted")
    return port


class TailorServer:
    """One Tailor serving process: embedded (in-memory state, snapshots in the data directory, learning in
    process) by default, or a Redis-mode replica (state in Redis, models from `tailor learn`)."""

    def __init__(self, config: ServeConfig, registry: CollectorRegistry | None = None) -> None:
        self.config = config
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = Metrics(self.registry)
        # Read now, so a bad catalog directory fails the start with a clear message; applied to the catalog store
        # (the source of truth) and served from it when the server starts.
        self._directory: dict[str, Catalog] | None = load_catalog_dir(config.catalogs)
        self._directory_fingerprint = catalog_dir_fingerprint(config.catalogs)
        self._catalog_epoch = -1
        self.catalog_store: CatalogStore
        self.redis: aioredis.Redis | None = None
        self.learner: Learner | None = None
        self.evidence_log: FileEvidenceLog | None = None  # the durable decision log (embedded; Redis: the learner)
        self.evidence: EvidenceRecorder | None = None
        self.series: ActionSeries | None = None  # the console's series (embedded; Redis mode: `tailor learn`'s)
        self.session_store: SessionStore
        self.decisions: DecisionLog
        if config.redis_url:
            # Redis mode: state is shared by every replica; `tailor learn` learns and publishes models.
            self.redis = redis_connect(config.redis_url, config.redis_cluster, config.redis_timeout_seconds)
            self.models = ModelRegistry(FollowedModelStore())
            self.model_store: RedisModelStore | None = RedisModelStore(self.redis, config.redis_prefix)
            self.catalog_store = RedisCatalogStore(self.redis, config.redis_prefix)
            redis_sessions = RedisSessionStore(self.redis, config.redis_prefix, config.session_ttl_seconds)
            redis_log = RedisDecisionLog(self.redis, config.redis_prefix, config.redis_shards)
            self.decisions, self.session_store = redis_log, redis_sessions
            state: DecideState = RedisDecideState(self.redis, redis_sessions, redis_log, self.metrics)
        else:
            config.data_dir.mkdir(parents=True, exist_ok=True)
            # The catalog store is the source of truth; the catalog directory seeds it (see server.state.catalogs).
            corrupt_catalog = self.metrics.corrupt_state.labels("catalog")
            self.catalog_store = FileCatalogStore(
                config.data_dir / "catalogs", on_corrupt=lambda path, why: corrupt_catalog.inc()
            )
            corrupt = self.metrics.corrupt_state.labels("snapshot")
            self.models = ModelRegistry(
                FileModelStore(
                    config.data_dir / "models", keep=config.snapshots_kept, on_corrupt=lambda path, why: corrupt.inc()
                )
            )
            self.model_store = None
            evidence: EvidenceRecorder | None = None
            if config.decision_log:
                self.evidence_log = FileEvidenceLog(
                    config.data_dir / "decisions",
                    retention_seconds=config.decision_log_retention_hours * 3600,
                    max_total_bytes=config.decision_log_max_mb << 20,
                )
                evidence = EvidenceRecorder(
                    self.evidence_log.write, self._pseudonymizer(), self.metrics, self.evidence_log.flush
                )
            self.evidence = evidence
            self.series = ActionSeries()
            learner = self.learner = Learner(
                self.models, self.metrics, config.learn_slice_seconds, evidence, self.series
            )
            memory_log = InMemoryDecisionLog(
                config.max_pending_decisions,
                learn=learner.submit,
                on_unactivated=self._count_unactivated,
                on_evicted=self._count_evicted,
            )
            memory_sessions = InMemorySessionStore(config.max_sessions, config.session_ttl_seconds)
            self.decisions, self.session_store = memory_log, memory_sessions
            state = EmbeddedDecideState(memory_sessions, memory_log)
            self.metrics.decision_log_size.set_function(lambda: len(memory_log))
            self.metrics.join_backlog.set_function(memory_log.pending)
            self.metrics.learn_queue.set_function(lambda: len(learner))
            self.metrics.add_learner_lag_collector(learner.lag)
            self.metrics.add_session_collector(
                lambda: (len(memory_sessions), memory_sessions.evicted, memory_sessions.expired)
            )
        self.joiner = RewardJoiner(self.decisions, self.metrics, config.limits.max_id_bytes)
        self.sessions = SessionContext(self.session_store, self.decisions, self.joiner, self.metrics)
        self.directory = CatalogDirectory(self.catalog_store)
        self.service = DecisionService(
            {},  # the catalog store's, from `start`
            self.models,
            self.decisions,
            state,
            self.joiner,
            self.sessions,
            self.metrics,
            config.limits,
            config.decision_grace_seconds,
        )
        self.metrics.add_model_collector(self._model_states)
        self.metrics.touch_methods(pb.DESCRIPTOR.services_by_name["DecisionService"].methods_by_name)
        self.metrics.touch_methods(apb.DESCRIPTOR.services_by_name["AdminService"].methods_by_name)
        self.health = health_aio.HealthServicer()
        # Credentials are read now, so a bad key file or certificate fails the start with a clear message.
        self.keys = KeyRing(config.api_keys) if config.api_keys is not None else None
        self.metrics.api_keys.set(len(self.keys) if self.keys is not None else 0)
        self.certificates = (
            ServerCertificates(config.tls_cert, config.tls_key, config.tls_client_ca, self.metrics)
            if config.tls_cert is not None and config.tls_key is not None
            else None
        )
        self.guard = CallGuard(self.metrics, self.keys, config.max_in_flight, config.insecure, config.local_networks)
        self.port = 0
        self.metrics_port: int | None = None
        self.console: ConsoleServer | None = None
        self.console_port: int | None = None
        self.health_port: int | None = None
        self._server: grpc.aio.Server | None = None
        self._health_server: grpc.aio.Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._http: Any = None
        self._stopped = asyncio.Event()
        self._reloads: set[asyncio.Future[bool]] = set()

    def _count_evicted(self, record: DecisionRecord) -> None:
        self.metrics.decisions_evicted.labels(record.decision_point).inc()

    def _count_unactivated(self, record: DecisionRecord) -> None:
        self.metrics.decisions_expired_unactivated.labels(record.decision_point).inc()
        if self.evidence is not None:
            self.evidence.unactivated(record)

    def _pseudonymizer(self) -> Pseudonymizer:
        cfg = self.config
        if not cfg.decision_log_pseudonymize:
            return Pseudonymizer(None)
        if cfg.decision_log_key:
            return Pseudonymizer(bytes.fromhex(cfg.decision_log_key))
        return Pseudonymizer(file_installation_key(cfg.data_dir / "decision-log.key"))

    def _model_states(self) -> Iterable[tuple[str, int, float, int, int]]:
        for m in self.models:
            yield m.decision_point, m.seq, m.saved_at, m.learned_since_snapshot, len(m.actions.under_floor)

    @property
    def pending_file(self) -> Path:
        return self.config.data_dir / PENDING_FILE

    async def start(self) -> int:
        """Start serving; returns the bound gRPC port."""
        cfg = self.config
        if self.learner is not None:
            await self.sync_catalogs()
            self._restore_pending()
            self._restore_series()
        else:
            try:
                await self.sync_catalogs()
                await self._follow_once()  # serve the latest published models from the first decision on
                assert self.redis is not None
                for problem in await redis_settings_problems(self.redis):
                    log.warning("%s", problem, extra={"event": "redis_settings_warning"})
            except Exception:
                if not self.service.catalogs and self._directory is not None:
                    self.service.use_catalogs(self._directory)  # the catalog store's come when Redis answers
                log.warning(
                    "Redis unreachable at start-up: serving the catalog directory and fresh models until it answers",
                    exc_info=True,
                    extra={"event": "redis_unavailable"},
                )
        limits = cfg.limits
        options = [
            ("grpc.max_receive_message_length", limits.max_message_bytes),
            ("grpc.max_send_message_length", limits.max_message_bytes),
            ("grpc.so_reuseport", 0),
        ]
        server = grpc.aio.server(options=options)
        guarded = self.guard.register(server)  # every handler registered through it gets the guard's checks
        pb_grpc.add_DecisionServiceServicer_to_server(DecisionServicer(self.service, cfg, self.metrics), guarded)
        model_admin: ModelAdmin
        if self.model_store is not None:
            model_admin = SharedModels(self.models, self.model_store, cfg.model_command_timeout_seconds)
        else:
            model_admin = LocalModels(self.models, self.catalog_store)
        admin = CatalogAdmin(self.catalog_store, self.service, self.models, model_admin, self.sync_catalogs)
        apb_grpc.add_AdminServiceServicer_to_server(AdminServicer(admin, self.metrics), guarded)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, guarded)
        health_name = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
        reflection_pb2_grpc.add_ServerReflectionServicer_to_server(  # what enable_server_reflection does for aio
            ReflectionServicer([SERVICE_NAME, ADMIN_SERVICE_NAME, health_name, reflection.SERVICE_NAME]),
            guarded,
        )
        credentials = self.certificates.credentials() if self.certificates is not None else None
        self.port = _bind(server, f"{cfg.host}:{cfg.port}", credentials, "gRPC")
        health_server = None
        if cfg.health_port is not None:
            # Kubelet's gRPC probes cannot speak TLS: this plaintext port serves the health service only.
            health_server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
            health_pb2_grpc.add_HealthServicer_to_server(self.health, health_server)
            self.health_port = _bind(health_server, f"{cfg.host}:{cfg.health_port}", None, "health")
        if cfg.metrics_port is not None:  # before serving: a taken metrics port fails the start cleanly
            self._http, _ = start_http_server(cfg.metrics_port, addr=cfg.metrics_host, registry=self.registry)
            self.metrics_port = self._http.server_port
        if cfg.console_port:  # the same: a taken console port fails the start cleanly
            self.console = self._console(admin)
            self.console_port = await self.console.start()
        await server.start()
        self._server = server
        if health_server is not None:
            await health_server.start()
            self._health_server = health_server
        if self.learner is not None:
            self._tasks = [
                asyncio.create_task(self.learner.run(), name="learner"),
                asyncio.create_task(self._sweep(), name="window-sweeper"),
                asyncio.create_task(self._snapshots(), name="snapshotter"),
            ]
        else:
            self._tasks = [asyncio.create_task(self._follow(), name="model-follower")]
        self._tasks.append(asyncio.create_task(self._watch_catalogs(), name="catalog-watcher"))
        if self.keys is not None:
            self._tasks.append(asyncio.create_task(self._watch_keys(), name="key-file-watcher"))
        for name in ("", SERVICE_NAME, ADMIN_SERVICE_NAME):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "serving %s on port %d (%s, %s; metrics on %s%s%s), decision points: %s",
            SERVICE_NAME,
            self.port,
            "TLS" + (" with client certificates" if cfg.tls_client_ca else "") if self.certificates else "plaintext",
            f"{len(self.keys)} API keys" if self.keys is not None else "no keys: " + self._unkeyed_mode(),
            self.metrics_port,
            f", a health-only port on {self.health_port}" if self.health_port else "",
            f", console on {cfg.console_host}:{self.console_port}" if self.console_port else ", no console",
            ", ".join(sorted(self.service.catalogs)),
            extra={
                "event": "server_started",
                "port": self.port,
                "metrics_port": self.metrics_port,
                "tls": self.certificates is not None,
                "api_keys": len(self.keys) if self.keys is not None else None,
                "decision_points": sorted(self.service.catalogs),
            },
        )
        return self.port

    def _unkeyed_mode(self) -> str:
        if self.config.insecure:
            log.warning(
                "--insecure: every caller that reaches this port may decide, report rewards and read sessions",
                extra={"event": "insecure_mode"},
            )
            return "every caller served (--insecure)"
        return f"protected mode, only callers from {', '.join(self.config.local_networks)}"

    def reload(self) -> None:
        """SIGHUP: re-read the catalogs, the API key file and the TLS certificates."""
        task = asyncio.ensure_future(self.reload_catalogs())
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)
        self.reload_keys()
        if self.certificates is not None:
            self.certificates.request_reload()

    def reload_keys(self) -> bool:
        """Re-read the API key file; one that does not validate keeps the keys already loaded."""
        if self.keys is None:
            return False
        try:
            count = self.keys.reload()
        except KeyFileError as err:
            self.metrics.credential_reloads.labels("keys", "error").inc()
            log.error(
                "API key file reload failed; keeping the %d keys loaded:\n%s",
                len(self.keys),
                err,
                extra={"event": "credentials_reload_failed", "what": "keys"},
            )
            return False
        self.metrics.credential_reloads.labels("keys", "ok").inc()
        self.metrics.api_keys.set(count)
        log.info(
            "API keys reloaded from %s: %d keys",
            self.keys.path,
            count,
            extra={"event": "credentials_reloaded", "what": "keys", "keys": count},
        )
        return True

    async def _watch_keys(self) -> None:
        """Kubernetes updates a mounted Secret without a signal: look for a changed key file."""
        assert self.keys is not None
        while True:
            await asyncio.sleep(self.config.credentials_poll_seconds)
            if self.keys.changed():
                self.reload_keys()

    def _console(self, admin: CatalogAdmin) -> ConsoleServer:
        cfg = self.config
        secret = bytes.fromhex(cfg.console_secret) if cfg.console_secret else secrets.token_bytes(32)

        sources = ConsoleSources(
            admin=admin,
            keys=self.keys,
            sessions=self.service.sessions,
            series=self.console_series,
            model_ages=lambda: {m.decision_point: m.saved_at for m in self.models},
            tls=self.certificates is not None,
            metrics=self.metrics,
        )
        app = build_console(sources, secret, list(cfg.console_hosts))
        tls = (cfg.tls_cert, cfg.tls_key) if self.certificates is not None else (None, None)
        return ConsoleServer(app, cfg.console_host, cfg.console_port, *tls)

    async def console_series(self, points: list[str], since: float, until: float) -> ActionSeries | None:
        """The learner's series for the console: embedded, this server's; Redis mode, what the leading `tailor
        learn` added to Redis (the whole fleet's decisions)."""
        if self.series is not None:
            return self.series
        if self.redis is None:
            return None
        since = max(since, until - REDIS_SERIES_SECONDS)  # one hash per minute: a week would be 10,080 reads
        try:
            return await read_from_redis(self.redis, self.config.redis_prefix, points, since, until)
        except (aioredis.RedisError, OSError):
            log.warning("the console could not read the series from Redis", exc_info=True, extra={"event": "series"})
            return None

    @property
    def series_file(self) -> Path:
        return self.config.data_dir / "console-series.json"

    def _restore_series(self) -> None:
        if self.series is None or not self.series_file.exists():
            return
        doc = read_json(self.series_file)
        try:
            if doc is None:
                raise ValueError("not a JSON object")
            self.series.load_doc(doc)
        except ValueError as err:
            self.metrics.corrupt_state.labels("console_series").inc()
            log.error(
                "%s: %s; the console's series start empty", self.series_file, err, extra={"event": "corrupt_state"}
            )

    def save_series(self) -> None:
        if self.series is None or not self.series.changed:
            return
        try:
            write_json_atomic(self.series_file, self.series.to_doc())
            self.series.changed = False
        except OSError:
            log.exception("the console's series were not saved; will retry", extra={"event": "series_save_failed"})

    def _restore_pending(self) -> None:
        path = self.pending_file
        if not path.exists() or not isinstance(self.decisions, InMemoryDecisionLog):
            return
        restored, corrupt = self.decisions.load(path)
        # Once loaded, the file must not be replayed again after a later crash (it would double-learn).
        path.unlink()
        self.metrics.pending_restored.inc(restored)
        log.info(
            "restored %d retained decisions from %s",
            restored,
            path,
            extra={"event": "decisions_restored", "count": restored},
        )
        if corrupt:
            self.metrics.corrupt_state.labels("pending_decision").inc(corrupt)
            log.error(
                "%s: skipped %d torn or corrupt lines (their decisions are lost)",
                path,
                corrupt,
                extra={"event": "corrupt_state", "what": "pending_decision", "count": corrupt},
            )

    async def _sweep(self) -> None:
        """Close reward windows as they come due; drop idle sessions about once a second."""
        sweeps = 0
        while True:
            now = time.time()
            await self.decisions.close_windows(now)
            sweeps += 1
            if sweeps % 20 == 0 and isinstance(self.session_store, InMemorySessionStore):
                self.session_store.expire(now)
            await asyncio.sleep(_SWEEP_SECONDS)

    async def _follow(self) -> None:
        """Redis mode: pick up models published by `tailor learn`, every `model_poll_seconds`."""
        while True:
            await asyncio.sleep(self.config.model_poll_seconds)
            try:
                await self._follow_once()
            except Exception:  # Redis away: keep serving the models already loaded (a line per 10 s at most)
                _follow_log.log(
                    logging.WARNING,
                    "follow",
                    "cannot read published models; serving the loaded ones",
                    exc_info=True,
                    extra={"event": "redis_unavailable"},
                )

    async def _follow_once(self) -> None:
        assert self.model_store is not None
        published = await self.model_store.published()
        for model in self.models:
            found = published.get(model.decision_point)
            # Follow whatever is published, even an older sequence (a learner that had to start over after
            # Redis lost its data): the published model is the one every replica must agree on.
            if found is None or (found.fingerprint == model.fingerprint and found.seq == model.seq):
                continue
            spec = model.spec
            if found.fingerprint != model.fingerprint:
                # Other flags: adopt them if the catalog leaves them open (the learner kept an upgraded
                # model's flags); a catalog that sets other flags waits for the learner to catch up.
                catalog = self.service.catalogs.get(model.decision_point)
                if catalog is None:
                    continue
                spec = catalog.policy.learning_spec([found.built_with])
                if spec.fingerprint() != found.fingerprint:
                    continue
            blob = await self.model_store.blob(found)
            if blob is None:
                continue
            # Building a VW workspace from a model takes ~10 ms, mostly outside the GIL: in a thread the
            # loop keeps serving meanwhile; only the swap happens on it.
            policy = await asyncio.to_thread(policy_from_bytes, spec, blob)
            if self.models.install(model.decision_point, policy, found.seq, found.saved_at, found.actions):
                log.info(
                    "serving published model %s for %s",
                    found.version,
                    model.decision_point,
                    extra={"event": "model_followed", "decision_point": model.decision_point, "version": found.version},
                )

    async def _snapshots(self) -> None:
        """Snapshot changed models every `snapshot_interval_seconds`; and a changed model that has learned
        nothing more for `snapshot_idle_seconds` at once, so a burst of learning followed by quiet (a
        low-traffic decision point, the night) survives a kill -9. Steady traffic never looks idle."""
        interval, idle = self.config.snapshot_interval_seconds, self.config.snapshot_idle_seconds
        last_round = last_series = time.monotonic()
        seen: dict[str, int] = {}  # each model's unsnapshotted count at the previous tick
        while True:
            await asyncio.sleep(min(interval, idle))
            if time.monotonic() - last_round >= interval:
                self.snapshot_changed()
                if time.monotonic() - last_series >= SERIES_SAVE_SECONDS:
                    self.save_series()  # a whole file (about 1 MB a week per decision point): not every round
                    last_series = time.monotonic()
                last_round = time.monotonic()
            else:
                self.snapshot_changed(
                    [m for m in self.models if m.learned_since_snapshot == seen.get(m.decision_point)]
                )
            seen = {m.decision_point: m.learned_since_snapshot for m in self.models}

    def snapshot_changed(self, models: Iterable[ServedModel] | None = None) -> int:
        """Snapshot every model (of `models`, default all) that learned since its last snapshot; returns how
        many were written."""
        written = 0
        for model in self.models if models is None else models:
            if model.learned_since_snapshot == 0:
                continue
            started = time.perf_counter()
            try:
                self.models.snapshot(model)
            except OSError:
                log.exception(
                    "snapshot of %s failed; will retry",
                    model.decision_point,
                    extra={"event": "snapshot_failed", "decision_point": model.decision_point},
                )
                continue
            seconds = time.perf_counter() - started
            log.info(
                "snapshot %s of %s written",
                model.version,
                model.decision_point,
                extra={
                    "event": "snapshot_written",
                    "decision_point": model.decision_point,
                    "version": model.version,
                    "seq": model.seq,
                    "seconds": round(seconds, 4),
                },
            )
            self.metrics.snapshot_duration.observe(seconds)
            self.metrics.snapshots.labels(model.decision_point).inc()
            written += 1
        return written

    async def sync_catalogs(self) -> None:
        """Apply a new or changed catalog directory to the catalog store; serve the store's catalogs if they
        changed (here, through AdminService, or on another replica)."""
        if self._directory is not None:
            for event in await self.directory.apply(self._directory):
                self.metrics.catalog_changes.labels(event.decision_point, "directory").inc()
            self._directory = None
        epoch = await self.catalog_store.epoch()
        if epoch < self._catalog_epoch:
            # Redis lost the store (restarted without persistence, or flushed): seed it again from the directory,
            # whichever process gets there first (changes made through AdminService since are lost with it).
            log.warning(
                "the catalog store went back from epoch %d to %d: it lost its state; seeding it from %s again",
                self._catalog_epoch,
                epoch,
                self.config.catalogs,
                extra={"event": "catalog_store_lost"},
            )
            self.directory.forget()
            self._catalog_epoch = -1
            self._directory = load_catalog_dir(self.config.catalogs)
            return await self.sync_catalogs()
        if epoch == self._catalog_epoch:
            return
        current = await self.catalog_store.current()
        self.service.use_catalogs(served_catalogs(current))
        self._catalog_epoch = epoch
        versions = {name: v.version for name, v in current.items()}
        log.info(
            "serving catalogs %s",
            versions,
            extra={"event": "catalogs_served", "versions": versions},
        )

    async def reload_catalogs(self) -> bool:
        """Re-read the catalog directory (SIGHUP, or its files changed) and apply what changed in it to the
        catalog store; an invalid directory changes nothing."""
        try:
            self._directory = load_catalog_dir(self.config.catalogs)
        except CatalogError as err:
            self.metrics.catalog_reloads.labels("error").inc()
            log.error(
                "catalog reload failed; keeping the current catalogs:\n%s",
                err,
                extra={"event": "catalog_reload_failed", "problems": err.problems},
            )
            return False
        await self.sync_catalogs()
        self.metrics.catalog_reloads.labels("ok").inc()
        log.info(
            "catalog directory applied: %s",
            ", ".join(sorted(self.service.catalogs)),
            extra={"event": "catalogs_reloaded", "decision_points": sorted(self.service.catalogs)},
        )
        return True

    async def _watch_catalogs(self) -> None:
        """Kubernetes updates a mounted ConfigMap without a signal, and other replicas change the catalog store:
        look for both every `catalog_poll_seconds`."""
        while True:
            await asyncio.sleep(self.config.catalog_poll_seconds)
            try:
                fingerprint = await asyncio.to_thread(catalog_dir_fingerprint, self.config.catalogs)
                if fingerprint != self._directory_fingerprint:
                    self._directory_fingerprint = fingerprint
                    await self.reload_catalogs()
                else:
                    await self.sync_catalogs()
            except Exception:  # Redis away: keep serving the catalogs loaded (a line per 10 s at most)
                _catalog_log.log(
                    logging.WARNING,
                    "catalogs",
                    "cannot read the catalog store; serving the loaded catalogs",
                    exc_info=True,
                    extra={"event": "redis_unavailable"},
                )

    async def stop(self, grace: float | None = None) -> None:
        """Graceful shutdown: NOT_SERVING, drain RPCs, learn the queue, snapshot, persist decisions."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        await self.health.enter_graceful_shutdown()
        if self.console is not None:
            await self.console.stop()
        grace = self.config.shutdown_grace_seconds if grace is None else grace
        if self._server is not None:
            await _bounded("gRPC server stop", self._server.stop(grace), grace + _STEP_SECONDS)
        if self._health_server is not None:  # probes saw NOT_SERVING while the calls drained
            await _bounded("health server stop", self._health_server.stop(0), _STEP_SECONDS)
        for task in self._tasks:
            task.cancel()
        # gather with return_exceptions: each task's end (cancelled, or an error it died of) is collected
        await _bounded("background tasks", asyncio.gather(*self._tasks, return_exceptions=True), _STEP_SECONDS)
        learned = written = saved = 0
        if self.learner is not None and isinstance(self.decisions, InMemoryDecisionLog):
            await self.decisions.close_windows(time.time())
            learned = self.learner.drain()
            if self.evidence_log is not None:
                try:
                    self.evidence_log.close()
                except OSError:  # a full disk: counted; the snapshot and the pending decisions still get saved
                    self.metrics.decision_log_errors.inc()
                    log.exception("decision log not closed cleanly", extra={"event": "decision_log_error"})
            written = self.snapshot_changed()
            self.save_series()
            saved = self.decisions.save(self.pending_file)
        if self.redis is not None:  # Redis mode: everything acknowledged is already in Redis
            await _bounded("Redis connections close", self._close_redis(self.redis), _STEP_SECONDS)
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        for model in self.models:
            model.policy.close()
        log.info(
            "stopped: learned %d queued examples, wrote %d snapshots, kept %d decisions",
            learned,
            written,
            saved,
            extra={"event": "stopped", "learned": learned, "snapshots": written, "decisions_kept": saved},
        )

    @staticmethod
    async def _close_redis(client: aioredis.Redis) -> None:
        await redis_close_pipelines(client)
        await client.aclose()

    async def wait_closed(self) -> None:
        await self._stopped.wait()


async def _bounded(step: str, awaitable: Awaitable[Any], seconds: float) -> None:
    """Await a shutdown step for at most `seconds`; past that, log it and go on (the process is ending)."""
    try:
        await asyncio.wait_for(awaitable, seconds)
    except TimeoutError:
        log.warning(
            "shutdown: %s did not finish within %.0f s; going on",
            step,
            seconds,
            extra={"event": "shutdown_step_timeout", "step": step},
        )
