"""Timing helpers for the benchmarks that measure Tailor's code in process, without gRPC."""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry

from server import ServeConfig, TailorServer

T = TypeVar("T")
Item = TypeVar("Item")


def run_now(coro: Coroutine[Any, Any, T]) -> T:
    """Drive a coroutine that never waits (the embedded backend) to its result, without an event loop in
    the measurement: handler time alone."""
    try:
        coro.send(None)
    except StopIteration as done:
        result: T = done.value
        return result
    coro.close()
    raise RuntimeError("the coroutine waited: not the embedded backend?")


def per_call_us(fn: Callable[[Item], object], inputs: Iterable[Item]) -> float:
    """Mean µs of `fn` over `inputs`, one call each."""
    calls = 0
    started = time.perf_counter()
    for item in inputs:
        fn(item)
        calls += 1
    return (time.perf_counter() - started) / max(1, calls) * 1e6


@contextlib.contextmanager
def embedded_server(write_catalog: Callable[[Path], None]) -> Iterator[tuple[TailorServer, ServeConfig]]:
    """An embedded `TailorServer`, not started (no gRPC, no tasks), over a catalog `write_catalog` writes."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "catalogs"
        folder.mkdir()
        write_catalog(folder)
        config = ServeConfig(catalogs=folder, data_dir=Path(tmp) / "data", metrics_port=None)
        yield TailorServer(config, registry=CollectorRegistry()), config
