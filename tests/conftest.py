"""Shared fixtures: a real Tailor server on port 0 (its own event loop thread), a real channel to it."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
import yaml
from prometheus_client import CollectorRegistry

from server import ServeConfig, TailorServer
from server.core import LearnConfig
from server.learning import SharedLearner
from server.state.decision_log import DecisionRecord
from server.tools.launcher import ServeProcess as Launched
from tailor import TailorClient
from tailor.v1 import decision_service_pb2 as pb
from tailor.v1 import decision_service_pb2_grpc as pb_grpc

from .redis_server import RedisClusterServer, RedisServer

# Every `tailor serve` a test starts (in process or as a subprocess) leaves the console off unless the test asks for
# it: the default port 8080 would be shared by all of them, and by whatever else this machine runs.
os.environ.setdefault("TAILOR_CONSOLE_PORT", "0")

T = TypeVar("T")

LAYOUTS = {
    "grid": {"style": "grid", "density": 24},
    "carousel": {"style": "carousel", "density": 6},
    "editorial": {"style": "editorial", "density": 4},
}


def write_catalog(
    folder: Path,
    name: str,
    actions: dict[str, dict[str, Any]],
    payload: bool = True,
    **policy: Any,
) -> Path:
    doc = {
        "decision_point": name,
        "description": f"test catalog {name}",
        "policy": {"reward_window_seconds": 60, "default_reward": 0.0, **policy},
        "actions": [
            {"id": a, "features": f, **({"payload": {"template": f"{a}_v1"}} if payload else {})}
            for a, f in actions.items()
        ],
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


class RunningServer:
    """A TailorServer on its own event loop thread, with a channel and a typed client."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.registry = CollectorRegistry()

        async def create() -> TailorServer:
            return TailorServer(config, registry=self.registry)

        self.app = self.run(create())
        self.port = self.run(self.app.start())
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")
        self.stub = pb_grpc.DecisionServiceStub(self.channel)
        self.client = TailorClient("", channel=self.channel)
        self.stopped = False

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout=60)
        except TimeoutError:  # say where the server's loop is stuck: every task's stack
            stacks = io.StringIO()
            for task in asyncio.all_tasks(self.loop):
                task.print_stack(file=stacks)
            raise TimeoutError(
                f"the server's loop did not answer within 60 s; its tasks:\n{stacks.getvalue()}"
            ) from None

    def call(self, fn: Callable[[], T]) -> T:
        """Run fn on the server's loop thread (safe access to its state)."""

        async def wrapped() -> T:
            return fn()

        return self.run(wrapped())

    def record(self, event_id: str) -> DecisionRecord | None:
        """The decision log's record of a decision (read on the server's loop)."""
        return self.run(self.app.decisions.get(event_id))

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        value = self.registry.get_sample_value(name, labels or {})
        return 0.0 if value is None else value

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.call(predicate):
                return True
            time.sleep(0.02)
        return False

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        self.channel.close()
        self.run(self.app.stop(grace=1.0))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


class RunningLearner:
    """`tailor learn`'s SharedLearner on its own event loop thread (the subprocess is tested in tests/app)."""

    def __init__(self, config: LearnConfig) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

        async def create() -> tuple[SharedLearner, asyncio.Event]:
            return SharedLearner(config), asyncio.Event()

        self.learner, self.stop_event = asyncio.run_coroutine_threadsafe(create(), self.loop).result(30)
        self.task = asyncio.run_coroutine_threadsafe(self.learner.run(self.stop_event), self.loop)

    def leading(self) -> bool:
        return self.learner.registry.get_sample_value("tailor_learner_leader") == 1

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.stop_event.set)
        self.task.result(30)
        asyncio.run_coroutine_threadsafe(self.learner.close(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def quick_learner(catalogs: Path, redis_url: str, prefix: str, cluster: bool = False) -> RunningLearner:
    """A leading `tailor learn` (in process) that publishes and follows catalog changes within tenths of a second."""
    config = LearnConfig(
        catalogs=catalogs,
        redis_url=redis_url,
        redis_prefix=prefix,
        redis_cluster=cluster,
        metrics_port=None,
        publish_interval_seconds=0.2,
        catalog_poll_seconds=0.1,
    )
    return RunningLearner(config)


@pytest.fixture(scope="module")
def module_redis() -> Iterator[RedisServer]:
    """A private redis-server shared by a module's tests (each test uses its own key prefix)."""
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterServer]:
    """A private Redis Cluster (3 primaries, a replica each) shared by the whole run: tests use key prefixes of
    their own, and a test that fails a node over leaves the cluster healthy (`wait_healthy`)."""
    cluster = RedisClusterServer().start()
    yield cluster
    cluster.stop()


@pytest.fixture
def catalog_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "catalogs"
    folder.mkdir()
    write_catalog(folder, "home_layout", LAYOUTS, reward_window_seconds=60)
    return folder


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., RunningServer]]:
    """Factory: start_server(catalogs=DIR, **ServeConfig overrides) -> RunningServer (stopped at teardown)."""
    running: list[RunningServer] = []

    def start(catalogs: Path, **overrides: Any) -> RunningServer:
        settings: dict[str, Any] = {
            "catalogs": catalogs,
            "host": "127.0.0.1",
            "port": 0,
            "metrics_port": None,
            "console_port": 0,  # tests/console starts its own
            "data_dir": tmp_path / "data",
            **overrides,
        }
        server = RunningServer(ServeConfig(**settings))
        running.append(server)
        return server

    yield start
    for server in running:
        server.stop()


@pytest.fixture
def server(start_server: Callable[..., RunningServer], catalog_dir: Path) -> RunningServer:
    return start_server(catalog_dir)


@pytest.fixture(params=["embedded", "redis", "cluster"])
def start_any(
    request: pytest.FixtureRequest, start_server: Callable[..., RunningServer]
) -> Iterator[Callable[..., RunningServer]]:
    """Factory for the suites that run over every backend: start_any(catalogs=DIR, **overrides) -> an embedded
    server, or a Redis-mode replica (on the module's private redis-server, or on the session's Redis Cluster;
    a prefix of its own) with a leading learner on the same catalogs; stopped at teardown."""
    learners: list[RunningLearner] = []
    cluster = request.param == "cluster"
    redis_server: RedisServer | RedisClusterServer | None = None
    if request.param != "embedded":  # started now: a test's clock starts after its Redis is up
        redis_server = request.getfixturevalue("redis_cluster" if cluster else "module_redis")

    def start(catalogs: Path, **overrides: Any) -> RunningServer:
        if redis_server is None:
            return start_server(catalogs, **overrides)
        prefix = f"t{uuid.uuid4().hex[:8]}"
        learner = quick_learner(catalogs, redis_server.url, prefix, cluster)
        learners.append(learner)
        shared = {"redis_url": redis_server.url, "redis_prefix": prefix, "redis_cluster": cluster}
        polls = {"model_poll_seconds": 0.1, "catalog_poll_seconds": 0.1}
        replica = start_server(catalogs, **shared, **polls, **overrides)
        assert replica.wait_for(lambda: learner.leading(), timeout=10)
        return replica

    yield start
    for learner in learners:
        learner.stop()


def fv(value: str | float) -> pb.FeatureValue:
    return pb.FeatureValue(text=value) if isinstance(value, str) else pb.FeatureValue(number=float(value))


class ServeProcess(Launched):
    """`tailor serve` as a real subprocess (CLI, signals, restarts), with a channel and a client."""

    proc: subprocess.Popen[bytes]

    def __init__(self, catalogs: Path, data_dir: Path, *extra: str) -> None:
        super().__init__(catalogs, data_dir, extra)
        self.log = self.log_path
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT)
        self.channel = grpc.insecure_channel(self.target)
        self.client = TailorClient("", channel=self.channel)

    def terminate(self, timeout: float = 30.0) -> int:
        self.channel.close()
        return self.stop(timeout)

    def kill(self) -> None:
        self.channel.close()
        super().kill()
