"""`tailor export-logs`: the decision log's lines for a time range, as VW DSJSON, from the data directory
(embedded) or from Redis (Redis mode), in the order they were learned (the order VW must read them in to
learn what Tailor learned), each decision once (lines are deduplicated by event id), with their numbers as VW's
text parser read them (`server.state.evidence.canonical`)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import time
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path
from typing import IO

from server.state import redis_connect
from server.state.evidence import LogFormatError, canonical, read_files, read_stream

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_time(value: str, now: float | None = None) -> float:
    """An RFC 3339 time with an offset, or a duration back from now (`30m`, `24h`, `7d`)."""
    match = _DURATION.match(value.strip())
    if match:
        return (time.time() if now is None else now) - float(match.group(1)) * _UNITS[match.group(2)]
    try:
        at = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r}: give an RFC 3339 time with an offset (2026-12-01T00:00:00Z) or a duration (24h, 7d)"
        ) from None
    if at.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{value!r}: give the time's offset (Z, or +01:00)")
    return at.timestamp()


def add_arguments(p: argparse.ArgumentParser) -> None:
    env = os.environ.get
    p.add_argument("--out", required=True, help="file to write the DSJSON lines to (- for standard output)")
    p.add_argument("--since", type=parse_time, help="decisions made at or after: RFC 3339, or a duration (24h)")
    p.add_argument("--until", type=parse_time, help="decisions made before: RFC 3339, or a duration (1h)")
    p.add_argument(
        "--decision-point", action="append", default=[], help="only this decision point (repeat for several)"
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        default=Path(env("TAILOR_DATA_DIR", "data")),
        help="embedded mode: the server's data directory (TAILOR_DATA_DIR; default ./data)",
    )
    p.add_argument("--redis-url", default=env("TAILOR_REDIS_URL"), help="Redis mode: read from Redis instead")
    p.add_argument("--redis-prefix", default=env("TAILOR_REDIS_PREFIX", "tailor"), help="Redis key prefix")
    p.add_argument(
        "--redis-cluster",
        action="store_true",
        default=env("TAILOR_REDIS_CLUSTER", "").lower() in ("1", "true", "yes", "on"),
        help="--redis-url names any node of a Redis Cluster (TAILOR_REDIS_CLUSTER)",
    )


def _selected(
    lines: Iterator[str], since: float | None, until: float | None, points: set[str], seen: set[str]
) -> Iterator[str]:
    for line in lines:
        try:
            doc = json.loads(line)
            tailor = doc["_tailor"]
            decided, point, event_id = float(tailor["decided_at"]), tailor["decision_point"], doc["EventId"]
        except (ValueError, KeyError, TypeError):
            continue  # a line torn by a crash mid-write
        if (since is not None and decided < since) or (until is not None and decided >= until):
            continue
        if points and point not in points:
            continue
        if event_id in seen:
            continue
        try:
            exported = canonical(line)  # numbers as VW's text parser read them: VW learns what Tailor learned
        except LogFormatError:
            continue
        seen.add(event_id)
        yield exported


async def _redis_lines(url: str, prefix: str, since: float | None, cluster: bool) -> list[str]:
    client = redis_connect(url, cluster)
    try:
        stream: AsyncIterator[str] = read_stream(client, prefix, since, None)  # published after being decided
        return [line async for line in stream]
    finally:
        await client.aclose()


def run(args: argparse.Namespace) -> int:
    if args.redis_url:
        source = f"Redis {args.redis_prefix}"
        lines: Iterator[str] = iter(
            asyncio.run(_redis_lines(args.redis_url, args.redis_prefix, args.since, args.redis_cluster))
        )
    else:
        root = args.data_dir / "decisions"
        if not root.is_dir():
            print(
                f"tailor export-logs: no decision log in {args.data_dir} ({root} does not exist): give the server's "
                "--data-dir, or --redis-url in Redis mode",
                file=sys.stderr,
            )
            return 1
        source = str(root)
        lines = read_files(root)
    out: IO[str] = sys.stdout if args.out == "-" else open(args.out, "w", encoding="utf-8")  # noqa: SIM115
    count, seen = 0, set[str]()
    try:
        for line in _selected(lines, args.since, args.until, set(args.decision_point), seen):
            out.write(line + "\n")
            count += 1
    finally:
        if out is not sys.stdout:
            out.close()
    print(f"tailor export-logs: {count} decisions from {source} written to {args.out}", file=sys.stderr)
    return 0
