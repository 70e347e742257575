"""The container build, without a container engine: ops/Containerfile is read with BuildKit's own parser and
checked for what an engine would do with it, and what its build stage does is done here for real. The files
it copies are copied into a build context, the wheel is built from them, installed alone (with its
dependencies) into a fresh virtual environment, and `tailor serve` runs from it as the Kubernetes manifests
run it: API keys and TLS on, the plaintext health-only port for probes. Then the image's HEALTHCHECK command
runs against it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
import venv
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dockerfile  # type: ignore[import-not-found]  # BuildKit's parser, compiled; no type information
import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from server.api import key_entry_yaml, new_key
from tailor import TailorClient

from ..pki import CA

REPO = Path(__file__).resolve().parents[2]
CONTAINERFILE = REPO / "ops" / "Containerfile"
IGNORE_FILE = REPO / ".dockerignore"
PACKAGES = ("tailor", "server", "policies")
SERVING = health_pb2.HealthCheckResponse.SERVING


def instructions() -> list[Any]:
    """The Containerfile's instructions, as BuildKit's own parser reads them (`dockerfile` wraps it)."""
    parsed: tuple[Any, ...] = dockerfile.parse_file(str(CONTAINERFILE))
    return list(parsed)


def stages() -> list[list[Any]]:
    """Instructions grouped by FROM (the ARGs before the first FROM are left out)."""
    grouped: list[list[Any]] = []
    for instruction in instructions():
        if instruction.cmd == "FROM":
            grouped.append([])
        if grouped:
            grouped[-1].append(instruction)
    return grouped


def copies(stage: list[Any]) -> list[tuple[list[str], str]]:
    """(sources, destination) of the COPY instructions that read the build context (no --from)."""
    return [(list(i.value[:-1]), i.value[-1]) for i in stage if i.cmd == "COPY" and not i.flags]


def healthcheck_command() -> list[str]:
    [check] = [i for i in instructions() if i.cmd == "HEALTHCHECK"]
    assert check.json and check.value[0] == "CMD", "exec form: the image needs no shell to run it"
    return list(check.value[1:])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# --- the Containerfile ---------------------------------------------------------------------------------


def test_the_containerfile_is_multi_stage_non_root_with_a_healthcheck() -> None:
    assert len(stages()) >= 2
    build, *_, runtime = stages()
    assert build[0].value[-2:] == ("AS", "build")
    # The build stage makes the wheel from this repository and installs it into a virtual environment.
    [run] = [i.value[0] for i in build if i.cmd == "RUN"]
    assert "pip wheel --no-deps --wheel-dir /dist ." in run
    assert "/opt/tailor/bin/pip install /dist/*.whl" in run
    # The runtime stage takes only that environment from it, and runs as an unprivileged user.
    from_build = [i.value for i in runtime if i.cmd == "COPY" and i.flags == ("--from=build",)]
    assert from_build == [("/opt/tailor", "/opt/tailor")]
    users = [i.value[0] for i in runtime if i.cmd == "USER"]
    assert users and int(users[-1].split(":")[0]) >= 1000  # numeric, so runAsNonRoot can check it
    entrypoint = [i for i in runtime if i.cmd == "ENTRYPOINT"]
    assert [(i.json, i.value) for i in entrypoint] == [(True, ("tailor",))]
    assert [(i.json, i.value) for i in runtime if i.cmd == "CMD"] == [(True, ("serve",))]
    env = {k: v for i in runtime if i.cmd == "ENV" for k, v in zip(i.value[::2], i.value[1::2], strict=True)}
    assert env["TAILOR_HEALTH_PORT"] == "8081"  # the port the HEALTHCHECK and the Kubernetes probes use
    assert env["PATH"].startswith("/opt/tailor/bin:")
    exposed = {p for i in runtime if i.cmd == "EXPOSE" for p in i.value}
    assert exposed >= {"50051", "8081", "8080", "9464"}  # gRPC, health, the web console, /metrics
    assert healthcheck_command()[:2] == ["python", "-c"]


def test_the_build_context_lets_in_everything_the_containerfile_copies() -> None:
    allowed = {line[1:].rstrip("/") for line in IGNORE_FILE.read_text().splitlines() if line.startswith("!")}
    assert "*" in IGNORE_FILE.read_text().splitlines(), "an allow-list: nothing else enters the context"
    for stage in stages():
        for sources, _ in copies(stage):
            for source in sources:
                assert source in allowed, f"{source} is copied but .dockerignore keeps it out"
                assert (REPO / source).exists(), source


# --- the wheel -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built as the build stage builds it: from a context holding only what the stage copies."""
    context = tmp_path_factory.mktemp("context")
    for sources, destination in copies(stages()[0]):
        for source in sources:
            target = context / destination / source if destination.endswith("/") else context / destination
            if (REPO / source).is_dir():
                shutil.copytree(REPO / source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(REPO / source, target)
    dist = tmp_path_factory.mktemp("dist")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check", "--no-deps", "-w", dist, context],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    [built] = dist.glob("tailor_decisions-*.whl")
    return built


def test_the_wheel_holds_the_three_packages_with_their_data_and_the_command(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        [entry_points] = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        console = archive.read(entry_points).decode()
    assert {n.split("/")[0] for n in names if ".dist-info/" not in n} == set(PACKAGES)
    in_repo = {
        str(p.relative_to(REPO))
        for package in PACKAGES
        for p in (REPO / package).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    shipped = {n for n in names if ".dist-info/" not in n}
    assert shipped == in_repo  # every module, typed stub (.pyi) and py.typed marker; nothing else
    assert "tailor = server._cli:main" in console


# --- running it ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment holding only the wheel and what it depends on; returns its bin/."""
    root = tmp_path_factory.mktemp("image")
    venv.create(root / "venv", with_pip=True)
    bin_dir = root / "venv" / "bin"
    install = subprocess.run(
        [str(bin_dir / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    return bin_dir


def _health(channel: grpc.Channel) -> int:
    status: int = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2).status
    return status


@pytest.fixture
def served(installed: Path, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], dict[str, str], Path]]:
    """`tailor serve` from the installed wheel, configured through TAILOR_* variables as the manifests do."""
    ca = CA(tmp_path / "pki")
    issued = ca.issue("tailor")
    key = new_key()
    keys = tmp_path / "keys.yaml"
    keys.write_text(key_entry_yaml("gateway", key, ["decide"]))
    ports = {"port": free_port(), "metrics": free_port(), "health": free_port(), "console": free_port()}
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TAILOR_") and k != "PYTHONPATH"}
    env = clean | {
        "TAILOR_HEALTH_PORT": str(ports["health"]),
        "TAILOR_CONSOLE_PORT": str(ports["console"]),  # on by default (8080); a free port here, on loopback
        "TAILOR_API_KEYS": str(keys),
        "TAILOR_TLS_CERT": str(issued.cert),
        "TAILOR_TLS_KEY": str(issued.key),
    }
    args = [str(installed / "tailor"), "serve", "--host", "127.0.0.1", "--catalogs", str(REPO / "catalogs")]
    args += [
        "--port",
        str(ports["port"]),
        "--metrics-port",
        str(ports["metrics"]),
        "--data-dir",
        str(tmp_path / "data"),
    ]
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(args, env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
    info = {k: str(v) for k, v in ports.items()} | {"key": key, "ca": str(ca.path), "log": str(log)}
    try:
        yield proc, info, tmp_path
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_tailor_serve_from_the_wheel_serves_tls_with_keys_and_health_on_the_probe_port(
    served: tuple[subprocess.Popen[bytes], dict[str, str], Path], installed: Path
) -> None:
    proc, info, workdir = served
    log = Path(info["log"])
    # Ready when the plaintext health-only port (the one kubelet and the HEALTHCHECK use) says SERVING.
    deadline = time.monotonic() + 60
    with grpc.insecure_channel(f"127.0.0.1:{info['health']}") as probe:
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if _health(probe) == SERVING:
                    break
            except grpc.RpcError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)

    with grpc.insecure_channel(f"127.0.0.1:{info['health']}") as probe:  # what the readiness probe asks
        request = health_pb2.HealthCheckRequest(service="tailor.v1.DecisionService")
        assert health_pb2_grpc.HealthStub(probe).Check(request, timeout=2).status == SERVING

    # What runs is the installed wheel, not this checkout.
    code = "import json, server, policies, tailor; print(json.dumps([m.__file__ for m in (server, policies, tailor)]))"
    where = subprocess.run(
        [str(installed / "python"), "-c", code], capture_output=True, text=True, cwd=workdir, timeout=60
    )
    assert where.returncode == 0, where.stderr
    assert all("site-packages" in path for path in json.loads(where.stdout))

    # The main port speaks TLS only, and calls need a key; health there needs none.
    root = Path(info["ca"]).read_bytes()
    target = f"127.0.0.1:{info['port']}"
    with grpc.secure_channel(target, grpc.ssl_channel_credentials(root)) as tls:
        assert _health(tls) == SERVING
    with grpc.insecure_channel(target) as plaintext, pytest.raises(grpc.RpcError) as refused:
        _health(plaintext)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    catalog = yaml.safe_load((REPO / "catalogs" / "home_layout.yaml").read_text())
    with TailorClient(target, api_key=info["key"], root_certificates=root) as client:
        decision = client.decide("s-1", "home_layout", context={"device": "mobile"})
    assert decision.action_id in {a["id"] for a in catalog["actions"]}
    with TailorClient(target, root_certificates=root) as anonymous, pytest.raises(grpc.RpcError) as denied:
        anonymous.decide("s-1", "home_layout")
    assert denied.value.code() == grpc.StatusCode.UNAUTHENTICATED

    with urllib.request.urlopen(f"http://127.0.0.1:{info['metrics']}/metrics", timeout=5) as response:
        assert b"tailor_decisions_total" in response.read()

    # The web console speaks HTTPS with the same certificate, and its session cookie is marked Secure.
    tls_context = ssl.create_default_context(cafile=info["ca"])
    with urllib.request.urlopen(f"https://127.0.0.1:{info['console']}/signin", context=tls_context, timeout=5) as page:
        assert page.status == 200
        assert b"API key" in page.read()
        cookie = page.headers["Set-Cookie"].lower()
        assert cookie.startswith("tailor_console=")
        assert {"httponly", "samesite=strict", "secure"} <= {part.strip() for part in cookie.split(";")}
        assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    with pytest.raises(OSError):  # no plaintext HTTP on the console port
        urllib.request.urlopen(f"http://127.0.0.1:{info['console']}/signin", timeout=5)

    # The image's HEALTHCHECK, as the engine would run it (its `python` is the environment's).
    command = [str(installed / "python"), *healthcheck_command()[1:]]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"TAILOR_HEALTH_PORT": info["health"]}
    check = subprocess.run(command, capture_output=True, text=True, env=env, cwd=workdir, timeout=30)
    assert check.returncode == 0, check.stderr

    # SIGTERM: a graceful stop, exit 0; then the health check fails.
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0, log.read_text()
    check = subprocess.run(command, capture_output=True, text=True, env=env, cwd=workdir, timeout=30)
    assert check.returncode != 0
