"""Redis-mode deployments as processes, for the end-to-end suites: `tailor serve` replicas and `tailor learn`
processes of one key prefix on a private redis-server or Redis Cluster, killed at teardown."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path

from server.tools.launcher import LearnProcess

from .conftest import LAYOUTS, ServeProcess, write_catalog


def eventually(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll `predicate` every 0.1 s until it holds (True) or `timeout` passes (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


class RedisDeployment:
    """Replicas and learners sharing `url` under a prefix of their own, on a `home_layout` catalog."""

    def __init__(self, tmp: Path, url: str, cluster: bool = False, window: float = 2) -> None:
        self.tmp = tmp
        self.url = url
        self.flags = ("--redis-cluster",) if cluster else ()
        self.prefix = f"t{uuid.uuid4().hex[:6]}"
        self.catalogs = tmp / "catalogs"
        self.catalogs.mkdir()
        write_catalog(self.catalogs, "home_layout", {a: {"style": a} for a in LAYOUTS}, reward_window_seconds=window)
        self.replicas: list[ServeProcess] = []
        self.learners: list[LearnProcess] = []

    def replica(self) -> ServeProcess:
        extra = ("--redis-url", self.url, "--redis-prefix", self.prefix, *self.flags)
        proc = ServeProcess(self.catalogs, self.tmp / f"data-{len(self.replicas)}", *extra).wait_serving()
        self.replicas.append(proc)
        return proc

    def learner(self) -> LearnProcess:
        log = self.tmp / f"learn-{len(self.learners)}.log"
        proc = LearnProcess(self.catalogs, self.url, self.prefix, log, self.flags).start()
        self.learners.append(proc)
        return proc

    def stop(self) -> None:
        for learner in self.learners:
            learner.kill()
        for replica in self.replicas:
            replica.kill()
