"""`tailor serve` as a child process: start it on free ports, wait for gRPC health, stop it gracefully.

Used by `tailor simulate` to run against an embedded server, and by benchmarks and tests that need a
real server process (signals, exit codes, a process boundary like a gateway sees).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families


def cpu_seconds(pid: int, tid: int | None = None) -> float:
    """User + system CPU time a live process (or one of its threads) has used so far (Linux /proc)."""
    stat = Path(f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat")
    fields = stat.read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return ticks / os.sysconf("SC_CLK_TCK")


def resident_mb(pid: int, peak: bool = False) -> float:
    """A live process's resident memory in MB, now or at its peak (VmRSS / VmHWM of Linux /proc)."""
    field = "VmHWM:" if peak else "VmRSS:"
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


def metric_sum(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of `name` matching `labels` in Prometheus exposition text (0 when absent)."""
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def free_port() -> int:
    """A TCP port that was free a moment ago on the loopback interface."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ServeProcess:
    """`python -m server serve` on free ports; SERVING once started, SIGTERM on stop (kill only if it hangs)."""

    def __init__(
        self,
        catalogs: Path,
        data_dir: Path,
        extra_args: Sequence[str] = (),
        log: Path | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.cwd = cwd  # `python -m server` imports the code of this directory (another checkout's, say)
        self.port = free_port()
        self.metrics_port = free_port()
        self.log_path = log if log is not None else data_dir.parent / f"serve-{self.port}.log"
        self.args = [
            sys.executable, "-m", "server", "serve",
            "--catalogs", str(catalogs), "--port", str(self.port),
            "--metrics-port", str(self.metrics_port), "--data-dir", str(data_dir),
            *([] if "--console-port" in extra_args else ["--console-port", "0"]), *extra_args,
        ]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None
        self.exit_code: int | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> Self:
        """Start (or start again after a stop or kill, on the same ports and data directory)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.exit_code = None
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(self.args, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT)
        try:
            return self.wait_serving(timeout)
        except BaseException:
            self.stop()
            raise

    def wait_serving(self, timeout: float = 30.0) -> Self:
        """Poll gRPC health until the overall status is SERVING (the contract's readiness signal)."""
        assert self.proc is not None, "not started"
        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(self.target) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"tailor serve exited {self.proc.returncode}:\n{self.log_tail()}")
                with contextlib.suppress(grpc.RpcError):
                    reply = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return self
                time.sleep(0.1)
        raise RuntimeError(f"tailor serve not SERVING within {timeout:.0f}s:\n{self.log_tail()}")

    def stop(self, timeout: float = 30.0) -> int:
        """Graceful stop, as an operator does it; returns the exit code (-9 if it had to be killed)."""
        if self.proc is None:
            return 0
        if self.exit_code is None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.exit_code = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        assert self.exit_code is not None
        return self.exit_code

    def kill(self) -> None:
        """kill -9: no graceful shutdown."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait(10)
            self.exit_code = self.proc.returncode

    def metrics(self) -> str:
        """The /metrics exposition text."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text: str = response.read().decode()
            return text

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def log_problems(self) -> list[str]:
        """Log lines that mention a warning, an error or a traceback."""
        markers = (" WARNING ", " ERROR ", " CRITICAL ", "Traceback")
        text = self.log_path.read_text(errors="replace")
        return [line for line in text.splitlines() if any(m in line for m in markers)]

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


class LearnProcess:
    """`python -m server learn` (Redis mode's shared learner), ready once its /metrics answers."""

    def __init__(self, catalogs: Path, redis_url: str, prefix: str, log: Path, extra_args: Sequence[str] = ()) -> None:
        self.metrics_port = free_port()
        self.log_path = log
        self.args = [
            sys.executable, "-m", "server", "learn", "--catalogs", str(catalogs), "--redis-url", redis_url,
            "--redis-prefix", prefix, "--metrics-port", str(self.metrics_port), *extra_args,
        ]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> Self:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tailor learn exited {self.proc.returncode}: {self.log_path.read_text()[-2000:]}")
            with contextlib.suppress(OSError):
                self.metrics()
                return self
            time.sleep(0.1)
        raise RuntimeError(f"tailor learn not ready within {timeout:.0f}s")

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text: str = response.read().decode()
            return text

    def sample(self, name: str, **labels: str) -> float:
        """The sum of a metric's samples matching `labels` (0 when absent)."""
        return metric_sum(self.metrics(), name, **labels)

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return -9

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


class RedisProcess:
    """A private `redis-server` on a free port, stopped by pid; restartable on the same port and directory.
    No persistence unless `appendonly` (AOF, fsync every second: what Tailor's README asks of a production
    Redis). For `tailor cluster`, the soak benchmark and tests; never touches a Redis it did not start."""

    def __init__(self, appendonly: bool = False, cluster: bool = False) -> None:
        self.appendonly = appendonly
        self.cluster_port = free_port() if cluster else None  # the cluster bus (by default port + 10000)
        executable = shutil.which("redis-server")
        if executable is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server), or pass --redis-url")
        self.executable = executable
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="tailor-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> Self:
        args = [
            self.executable, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "yes" if self.appendonly else "no", "--appendfsync", "everysec",
            "--dir", str(self.dir), "--daemonize", "no", "--protected-mode", "no",
        ]  # fmt: skip
        if self.cluster_port is not None:
            args += [
                "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-port",
                str(self.cluster_port), "--cluster-node-timeout", str(CLUSTER_NODE_TIMEOUT_MS),
            ]  # fmt: skip
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2) as conn:
                conn.sendall(b"PING\r\n")
                if conn.recv(16).startswith(b"+PONG"):
                    return self
            time.sleep(0.02)
        raise RuntimeError(f"redis-server did not answer on port {self.port}")

    def stop(self) -> None:
        """Terminate this server (by pid) and wait for it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def kill(self) -> None:
        """kill -9, as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def command(self, *args: str) -> str:
        """One command through `redis-cli`, its reply as text (for cluster administration)."""
        done = subprocess.run(
            ["redis-cli", "-p", str(self.port), *args], capture_output=True, text=True, timeout=30, check=True
        )
        return done.stdout


#: How long a cluster node may be unreachable before it counts as failed (a replica then takes over).
CLUSTER_NODE_TIMEOUT_MS = 2000


class RedisClusterProcess:
    """A private Redis Cluster on free ports: `primaries` primaries with `replicas` replicas each, made with
    `redis-cli --cluster create`, stopped by pid. `url` names one node: a cluster client finds the rest.
    For tests and benchmarks of `--redis-cluster`; `failover` and `kill` act as an operator and a crash do."""

    def __init__(self, primaries: int = 3, replicas: int = 1, appendonly: bool = False) -> None:
        self.nodes = [RedisProcess(appendonly, cluster=True) for _ in range(primaries * (1 + replicas))]
        self.replicas = replicas

    @property
    def url(self) -> str:
        """A live node's URL (a cluster client finds the others from it)."""
        return next((node for node in self.nodes if node.proc is not None), self.nodes[0]).url

    def start(self, timeout: float = 60.0) -> Self:
        try:
            for node in self.nodes:
                node.start()
            addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
            subprocess.run(
                ["redis-cli", "--cluster", "create", *addresses, "--cluster-replicas", str(self.replicas),
                 "--cluster-yes"],
                capture_output=True, text=True, timeout=timeout, check=True,
            )  # fmt: skip
            self.wait_healthy(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_healthy(self, timeout: float = 60.0) -> None:
        """Until every live node sees the cluster as ok and every replica is in sync with its primary."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self._healthy(node) for node in self.nodes if node.proc is not None):
                return
            time.sleep(0.1)
        raise RuntimeError("the Redis Cluster did not become healthy")

    @staticmethod
    def _healthy(node: RedisProcess) -> bool:
        try:
            info = node.command("CLUSTER", "INFO") + node.command("INFO", "replication")
        except (subprocess.SubprocessError, OSError):
            return False
        if "cluster_state:ok" not in info:
            return False
        return "role:master" in info or "master_link_status:up" in info

    def role(self, node: RedisProcess) -> str:
        """`master` or `slave`, as the node says of itself."""
        return node.command("ROLE").split()[0]

    def primaries(self) -> list[RedisProcess]:
        return [node for node in self.nodes if node.proc is not None and self.role(node) == "master"]

    def replica_of(self, primary: RedisProcess) -> RedisProcess:
        """A live replica of `primary` (`CLUSTER REPLICAS`: one line per replica, its address second)."""
        primary_id = primary.command("CLUSTER", "MYID").strip()
        ports = {int(line.split()[1].split("@")[0].rsplit(":", 1)[1]) for line in primary.command(
            "CLUSTER", "REPLICAS", primary_id).splitlines() if line.strip()}  # fmt: skip
        for node in self.nodes:
            if node.port in ports and node.proc is not None:
                return node
        raise RuntimeError(f"no live replica of the primary on port {primary.port}")

    def failover(self, primary: RedisProcess, timeout: float = 30.0) -> RedisProcess:
        """A manual failover (`CLUSTER FAILOVER` on a replica): the replica catches up and takes over with no
        acknowledged write lost. Returns the new primary once the cluster is healthy again."""
        replica = self.replica_of(primary)
        replica.command("CLUSTER", "FAILOVER")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.role(replica) != "master":
            time.sleep(0.05)
        self.wait_healthy(timeout)
        return replica

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
