"""The `tailor` command: serve, learn, catalog validate, keys new, export-logs, evaluate, and the tools (catalog
apply, simulate, cluster).

Every flag falls back to its TAILOR_* environment variable, then to the default in ServeConfig.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from server.api import ROLES, KeyFileError, Role, TLSError, key_entry_yaml, new_key
from server.catalogs import CatalogError, load_catalog_dir
from server.core import LOG_FORMATS, LearnConfig, ServeConfig, configure_logging

log = logging.getLogger("tailor")

#: First-generation threshold of the cyclic GC while serving (CPython default: 700 allocations).
GC_THRESHOLD_YOUNG = 20_000


def _serve_flags(p: argparse.ArgumentParser, learner: bool = False) -> None:
    p.add_argument("--catalogs", type=Path, help="catalog directory (TAILOR_CATALOGS; default ./catalogs)")
    if not learner:
        p.add_argument("--host", help="bind address (TAILOR_HOST; default [::])")
        p.add_argument("--port", type=int, help="gRPC port (TAILOR_PORT; default 50051)")
        p.add_argument(
            "--data-dir", type=Path, help="snapshots and pending decisions (TAILOR_DATA_DIR; default ./data)"
        )
        p.add_argument(
            "--api-keys", type=Path, help="API key file: digests and roles (TAILOR_API_KEYS; unset: protected mode)"
        )
        p.add_argument(
            "--insecure",
            action="store_const",
            const=True,
            help="without --api-keys, serve every caller, not only loopback ones (TAILOR_INSECURE)",
        )
        p.add_argument("--tls-cert", type=Path, help="PEM server certificate chain (TAILOR_TLS_CERT)")
        p.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert (TAILOR_TLS_KEY)")
        p.add_argument(
            "--tls-client-ca", type=Path, help="require client certificates from this CA (TAILOR_TLS_CLIENT_CA)"
        )
        p.add_argument(
            "--max-in-flight", type=int, help="calls at once before RESOURCE_EXHAUSTED (TAILOR_MAX_IN_FLIGHT; 1000)"
        )
        p.add_argument("--metrics-host", help="address /metrics binds (TAILOR_METRICS_HOST; default 0.0.0.0)")
        p.add_argument(
            "--console-port", type=int, help="the marketers' web console (TAILOR_CONSOLE_PORT; default 8080; 0: off)"
        )
        p.add_argument("--console-host", help="address the console binds (TAILOR_CONSOLE_HOST; default 127.0.0.1)")
        p.add_argument(
            "--health-port",
            type=int,
            help="plaintext port with only gRPC health, for probes when TLS is on (TAILOR_HEALTH_PORT; unset: off)",
        )
    p.add_argument(
        "--metrics-port",
        type=int,
        help=f"Prometheus port (TAILOR_METRICS_PORT; default {9465 if learner else 9464})",
    )
    p.add_argument("--redis-url", help="Redis URL for shared state (TAILOR_REDIS_URL)")
    p.add_argument("--redis-prefix", help="Redis key prefix (TAILOR_REDIS_PREFIX; default tailor)")
    p.add_argument(
        "--redis-cluster",
        action="store_true",
        default=None,
        help="--redis-url names any node of a Redis Cluster (TAILOR_REDIS_CLUSTER)",
    )
    _log_flags(p)


def _log_flags(p: argparse.ArgumentParser, top: bool = False) -> None:
    """On `tailor` itself, and again on serve and learn: `tailor serve --log-format json` reads as it should."""
    env = os.environ.get
    p.add_argument(
        "--log-level",
        default=env("TAILOR_LOG_LEVEL", "INFO") if top else argparse.SUPPRESS,
        help="DEBUG, INFO, WARNING, ERROR (TAILOR_LOG_LEVEL; default INFO)",
    )
    p.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default=env("TAILOR_LOG_FORMAT", "text") if top else argparse.SUPPRESS,
        help="json: one JSON object per line, for log pipelines (TAILOR_LOG_FORMAT; default text)",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tailor", description="Real-time personalization decisions over gRPC.")
    _log_flags(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True)
    _serve_flags(sub.add_parser("serve", help="run the decision service"))
    _serve_flags(sub.add_parser("learn", help="run the shared learner (Redis mode)"), learner=True)
    from server.tools import catalog_apply, cluster, simulator

    simulator.add_arguments(sub.add_parser("simulate", help="drive synthetic shoppers against a server"))
    cluster.add_arguments(sub.add_parser("cluster", help="run a local Redis-mode cluster under simulated load"))
    catalog = sub.add_parser("catalog", help="catalog tools").add_subparsers(dest="catalog_command", required=True)
    validate = catalog.add_parser("validate", help="validate a catalog directory; exit 1 on any error")
    validate.add_argument("directory", type=Path)
    catalog_apply.add_arguments(catalog.add_parser("apply", help="apply a catalog directory to a running server"))
    from server.evidence import export

    export.add_arguments(sub.add_parser("export-logs", help="the decision log as VW DSJSON lines, for a time range"))
    from server.evidence import evaluate

    evaluate.add_arguments(
        sub.add_parser("evaluate", help="offline evaluation on decision logs: IPS, SNIPS, DR with intervals")
    )
    keys = sub.add_parser("keys", help="API keys").add_subparsers(dest="keys_command", required=True)
    new = keys.add_parser("new", help="make a key: prints it once, and the entry for the --api-keys file")
    new.add_argument("--name", required=True, help="who holds the key (shown in logs and audit, never the key)")
    new.add_argument("--role", required=True, action="append", choices=ROLES, help="repeat for several roles")
    return parser


def _config(args: argparse.Namespace) -> ServeConfig:
    fields = (
        "catalogs",
        "host",
        "port",
        "metrics_port",
        "metrics_host",
        "health_port",
        "data_dir",
        "redis_url",
        "redis_prefix",
        "redis_cluster",
        "api_keys",
        "insecure",
        "tls_cert",
        "tls_key",
        "tls_client_ca",
        "max_in_flight",
        "console_port",
        "console_host",
    )
    given: dict[str, Any] = {f: getattr(args, f) for f in fields if getattr(args, f, None) is not None}
    return ServeConfig(**given)


def _learn_config(args: argparse.Namespace) -> LearnConfig:
    fields = ("catalogs", "metrics_port", "redis_url", "redis_prefix", "redis_cluster")
    given: dict[str, Any] = {f: getattr(args, f) for f in fields if getattr(args, f, None) is not None}
    return LearnConfig(**given)


async def _learn(config: LearnConfig) -> int:
    from prometheus_client import disable_created_metrics

    from server.learning import SharedLearner

    disable_created_metrics()  # type: ignore[no-untyped-call]
    learner = SharedLearner(config)
    learner.start_metrics()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, learner.request_reload)
    log.info(
        "tailor learn: waiting for the lease on %s (metrics on %s)",
        config.redis_prefix,
        learner.metrics_port,
        extra={"event": "learner_started", "redis_prefix": config.redis_prefix, "metrics_port": learner.metrics_port},
    )
    try:
        await learner.run(stop)
    finally:
        await learner.close()
    log.info("tailor learn stopped", extra={"event": "stopped"})
    return 0


def settle_gc() -> None:
    """Keep the cyclic GC's pauses off the serving path.

    Everything alive once the server is up (modules, protobuf descriptors, catalogs, pydantic models) lives
    as long as the process: `gc.freeze()` moves it out of the generations the collector scans, so a full
    collection walks only what serving created since. A larger first generation makes young collections
    rarer; what serving allocates per request is freed by reference counting either way (see
    benchmarks/README.md for the p99 this buys)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD_YOUNG, *gc.get_threshold()[1:])


async def _serve(config: ServeConfig) -> int:
    from prometheus_client import disable_created_metrics

    from ._app import TailorServer

    disable_created_metrics()  # type: ignore[no-untyped-call]  # *_created series double the scrape for no operational use

    server = TailorServer(config)
    await server.start()
    settle_gc()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, server.reload)
    await stop.wait()
    log.info("shutting down", extra={"event": "shutdown"})
    await server.stop()
    return 0


def _validate(directory: Path) -> int:
    try:
        catalogs = load_catalog_dir(directory)
    except CatalogError as err:
        for problem in err.problems:
            print(problem, file=sys.stderr)
        print(f"{len(err.problems)} problem(s) in {directory}", file=sys.stderr)
        return 1
    for name, cat in sorted(catalogs.items()):
        print(f"ok  {cat.source.name}: {name} ({len(cat.action_ids)} actions)")
    return 0


def _new_key(name: str, roles: list[Role]) -> int:
    key = new_key()
    entry = key_entry_yaml(name, key, roles)  # validates the name before anything is printed
    print(f"key (shown once; give it to {name}, keep only the entry below on the server):\n\n  {key}\n")
    print(f"entry for the --api-keys file:\n\n{entry}", end="")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        configure_logging(args.log_level, args.log_format)
    except ValueError as err:  # TAILOR_LOG_LEVEL or TAILOR_LOG_FORMAT holds an unknown name
        parser.error(str(err))
    if args.command == "catalog" and args.catalog_command == "apply":
        from server.tools import catalog_apply

        return catalog_apply.run(args)
    if args.command == "catalog":
        return _validate(args.directory)
    if args.command == "keys":
        try:
            return _new_key(args.name, args.role)
        except ValidationError as err:
            print(f"tailor keys new: --name: {err.errors()[0]['msg']}", file=sys.stderr)
            return 2
    if args.command == "export-logs":
        from server.evidence import export

        return export.run(args)
    if args.command == "evaluate":
        from server.evidence import evaluate

        return evaluate.run(args)
    if args.command == "simulate":
        from server.tools import simulator

        return simulator.run(args)
    if args.command == "cluster":
        from server.tools import cluster

        return cluster.run(args)
    try:
        if args.command == "learn":
            return asyncio.run(_learn(_learn_config(args)))
        return asyncio.run(_serve(_config(args)))
    except ValidationError as err:
        return _start_failed(
            [f"configuration: {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors()], args.log_format
        )
    except CatalogError as err:
        return _start_failed(err.problems, args.log_format)
    except (KeyFileError, TLSError, OSError) as err:
        return _start_failed([f"tailor: {err}"], args.log_format)


def _start_failed(problems: list[str], log_format: str) -> int:
    """Why serve or learn did not start: plain lines on stderr, or one JSON log line in JSON mode; exit 2."""
    if log_format == "json":
        log.error("%s", "\n".join(problems), extra={"event": "start_failed", "problems": problems})
    else:
        for problem in problems:
            print(problem, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
