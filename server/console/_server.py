"""The console's HTTP server: uvicorn on the serving event loop, on a socket bound before serving starts (a taken
port fails the start cleanly, as the metrics port does), with TLS from the server's `--tls-*` files."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import uvicorn
from starlette.applications import Starlette


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # `tailor serve` owns SIGTERM and SIGINT: it stops the console with everything else


class ConsoleServer:
    def __init__(
        self, app: Starlette, host: str, port: int, tls_cert: Path | None = None, tls_key: Path | None = None
    ) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # IPPROTO_TCP, not 0: asyncio then turns Nagle off on each connection (else every response waits ~40 ms
        # for a delayed ACK on a kept-alive connection)
        self.socket = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.socket.bind((host.strip("[]"), port))
        except OSError as err:
            self.socket.close()
            raise OSError(f"console: cannot listen on {host}:{port}: {err.strerror}") from None
        self.socket.listen(128)
        self.port = int(self.socket.getsockname()[1])
        config = uvicorn.Config(
            app,
            log_config=None,
            access_log=False,
            lifespan="off",
            server_header=False,
            ssl_certfile=str(tls_cert) if tls_cert else None,
            ssl_keyfile=str(tls_key) if tls_key else None,
            timeout_graceful_shutdown=2,
        )
        self._server = _Server(config)
        logging.getLogger("uvicorn.error").setLevel(logging.WARNING)  # its start/stop lines repeat Tailor's own
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> int:
        self._task = asyncio.create_task(self._server.serve(sockets=[self.socket]), name="console")
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises what stopped it
                raise RuntimeError("the console stopped before it started")
            await asyncio.sleep(0.01)
        return self.port

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(self._task, timeout=5)
        self.socket.close()
