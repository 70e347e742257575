"""App wiring: builds the stores, models, learner and servicers, runs the gRPC server and its tasks.

Lifecycle: start (catalogs, models resumed from snapshots, pending decisions restored, health
SERVING) -> serve -> stop (health NOT_SERVING, drain in-flight RPCs, learn what is queued, snapshot
changed models, persist retained decisions, exit).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry, start_http_server

from tailor.v1 import decision_service_pb2 as pb
from tailor.v1 import decision_service_pb2_grpc as pb_grpc

from ._catalog import CatalogError, load_catalog_dir
from ._config import ServeConfig
from ._decision_log import DecisionRecord, InMemoryDecisionLog
from ._decisions import DecisionService
from ._joiner import RewardJoiner
from ._learner import Learner
from ._metrics import Metrics
from ._models import FileModelStore, ModelRegistry
from ._servicer import DecisionServicer
from ._session_context import SessionContext
from ._sessions import InMemorySessionStore

log = logging.getLogger("tailor.server")

SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["DecisionService"].full_name
PENDING_FILE = "pending-decisions.jsonl"
_SWEEP_SECONDS = 0.05


class TailorServer:
    """One Tailor serving process on the embedded (in-memory + data directory) backend."""

    def __init__(self, config: ServeConfig, registry: CollectorRegistry | None = None) -> None:
        if config.redis_url:
            raise CatalogError(["--redis-url: the Redis backend is not available in this version yet"])
        self.config = config
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = Metrics(self.registry)
        catalogs = load_catalog_dir(config.catalogs)
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self.models = ModelRegistry(FileModelStore(config.data_dir / "models", keep=config.snapshots_kept))
        self.learner = Learner(self.models, self.metrics, config.learn_slice_seconds)
        self.decisions = InMemoryDecisionLog(
            config.max_pending_decisions, learn=self.learner.submit, on_unactivated=self._count_unactivated
        )
        self.joiner = RewardJoiner(self.decisions, self.metrics, config.limits.max_id_bytes)
        self.session_store = InMemorySessionStore(config.max_sessions, config.session_ttl_seconds)
        self.sessions = SessionContext(self.session_store, self.decisions, self.joiner, self.metrics)
        self.service = DecisionService(
            catalogs,
            self.models,
            self.decisions,
            self.joiner,
            self.sessions,
            self.metrics,
            config.limits,
            config.decision_grace_seconds,
        )
        self.metrics.add_model_collector(self._model_states)
        self.metrics.touch_methods(pb.DESCRIPTOR.services_by_name["DecisionService"].methods_by_name)
        self.metrics.decision_log_size.set_function(lambda: len(self.decisions))
        self.metrics.join_backlog.set_function(lambda: self.decisions.pending())
        self.metrics.learn_queue.set_function(lambda: len(self.learner))
        self.metrics.add_session_collector(
            lambda: (len(self.session_store), self.session_store.evicted, self.session_store.expired)
        )
        self.health = health_aio.HealthServicer()
        self.port = 0
        self.metrics_port: int | None = None
        self._server: grpc.aio.Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._http: Any = None
        self._stopped = asyncio.Event()

    def _count_unactivated(self, record: DecisionRecord) -> None:
        self.metrics.decisions_expired_unactivated.labels(record.decision_point).inc()

    def _model_states(self) -> Iterable[tuple[str, int, float, int]]:
        for m in self.models:
            yield m.decision_point, m.seq, m.saved_at, m.learned_since_snapshot

    @property
    def pending_file(self) -> Path:
        return self.config.data_dir / PENDING_FILE

    async def start(self) -> int:
        """Start serving; returns the bound gRPC port."""
        cfg = self.config
        self._restore_pending()
        limits = cfg.limits
        options = [
            ("grpc.max_receive_message_length", limits.max_message_bytes),
            ("grpc.max_send_message_length", limits.max_message_bytes),
            ("grpc.so_reuseport", 0),
        ]
        # The interceptor chain is where authentication and per-RPC policy will plug in.
        server = grpc.aio.server(interceptors=[], options=options)
        pb_grpc.add_DecisionServiceServicer_to_server(DecisionServicer(self.service, cfg, self.metrics), server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            [SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME], server
        )
        self.port = server.add_insecure_port(f"{cfg.host}:{cfg.port}")
        if self.port == 0:
            raise OSError(f"cannot bind gRPC port {cfg.host}:{cfg.port}")
        if cfg.metrics_port is not None:  # before serving: a taken metrics port fails the start cleanly
            self._http, _ = start_http_server(cfg.metrics_port, registry=self.registry)
            self.metrics_port = self._http.server_port
        await server.start()
        self._server = server
        self._tasks = [
            asyncio.create_task(self.learner.run(), name="learner"),
            asyncio.create_task(self._sweep(), name="window-sweeper"),
            asyncio.create_task(self._snapshots(), name="snapshotter"),
        ]
        for name in ("", SERVICE_NAME):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "serving %s on port %d (metrics on %s), decision points: %s",
            SERVICE_NAME,
            self.port,
            self.metrics_port,
            ", ".join(sorted(self.service.catalogs)),
        )
        return self.port

    def _restore_pending(self) -> None:
        path = self.pending_file
        if not path.exists():
            return
        restored = self.decisions.load(path)
        # Once loaded, the file must not be replayed again after a later crash (it would double-learn).
        path.unlink()
        self.metrics.pending_restored.inc(restored)
        log.info("restored %d retained decisions from %s", restored, path)

    async def _sweep(self) -> None:
        """Close reward windows as they come due; drop idle sessions about once a second."""
        sweeps = 0
        while True:
            now = time.time()
            await self.decisions.close_windows(now)
            sweeps += 1
            if sweeps % 20 == 0:
                self.session_store.expire(now)
            await asyncio.sleep(_SWEEP_SECONDS)

    async def _snapshots(self) -> None:
        while True:
            await asyncio.sleep(self.config.snapshot_interval_seconds)
            self.snapshot_changed()

    def snapshot_changed(self) -> int:
        """Snapshot every model that learned since its last snapshot; returns how many were written."""
        written = 0
        for model in self.models:
            if model.learned_since_snapshot == 0:
                continue
            started = time.perf_counter()
            try:
                self.models.snapshot(model)
            except OSError:
                log.exception("snapshot of %s failed; will retry", model.decision_point)
                continue
            self.metrics.snapshot_duration.observe(time.perf_counter() - started)
            self.metrics.snapshots.labels(model.decision_point).inc()
            written += 1
        return written

    def reload_catalogs(self) -> bool:
        """Re-read the catalog directory (SIGHUP); an invalid directory keeps the current catalogs."""
        try:
            catalogs = load_catalog_dir(self.config.catalogs)
        except CatalogError as err:
            self.metrics.catalog_reloads.labels("error").inc()
            log.error("catalog reload failed; keeping the current catalogs:\n%s", err)
            return False
        self.service.use_catalogs(catalogs)
        self.metrics.catalog_reloads.labels("ok").inc()
        log.info("catalogs reloaded: %s", ", ".join(sorted(catalogs)))
        return True

    async def stop(self, grace: float | None = None) -> None:
        """Graceful shutdown: NOT_SERVING, drain RPCs, learn the queue, snapshot, persist decisions."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        await self.health.enter_graceful_shutdown()
        if self._server is not None:
            await self._server.stop(self.config.shutdown_grace_seconds if grace is None else grace)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.decisions.close_windows(time.time())
        learned = self.learner.drain()
        written = self.snapshot_changed()
        saved = self.decisions.save(self.pending_file)
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        for model in self.models:
            model.policy.close()
        log.info("stopped: learned %d queued examples, wrote %d snapshots, kept %d decisions", learned, written, saved)

    async def wait_closed(self) -> None:
        await self._stopped.wait()
