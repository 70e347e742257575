"""Memory under a flood of session ids: does the embedded server keep its session cap?

    .venv/bin/python -m benchmarks.memory [--sessions 1000000] [--cap 200000]

Starts `tailor serve` (embedded, `TAILOR_MAX_SESSIONS=--cap`) and streams one page view for each of
--sessions distinct session ids (TrackEvents, 1,000 events a message), sampling the server's resident
memory as it goes. Reports the peak, the memory per session kept (growth up to the cap / the cap), and
checks that the sessions held never pass the cap and that memory stops growing once it is reached (the
growth over the second half of the flood, when every new session evicts an old one, against the first).
Writes results.json and results.md beside this file (or --out).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks._results import publish
from server.tools.launcher import ServeProcess, metric_sum, resident_mb
from tailor import TailorClient
from tailor.v1 import decision_service_pb2 as pb

HERE = Path(__file__).resolve().parent
BATCH = 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=1_000_000)
    parser.add_argument("--cap", type=int, default=200_000, help="TAILOR_MAX_SESSIONS (the default)")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tailor-memory-") as tmp:
        catalogs = Path(tmp) / "catalogs"
        catalogs.mkdir()
        (catalogs / "home.yaml").write_text("decision_point: home\nactions:\n  - {id: a}\n  - {id: b}\n")
        os.environ["TAILOR_MAX_SESSIONS"] = str(args.cap)
        server = ServeProcess(catalogs, Path(tmp) / "data").start()
        assert server.proc is not None
        pid = server.proc.pid
        samples: list[tuple[int, float]] = [(0, resident_mb(pid))]
        held_max = 0.0
        started = time.perf_counter()
        try:
            with TailorClient(server.target, timeout=60) as client:
                for first in range(0, args.sessions, BATCH):
                    events = [
                        pb.SessionEvent(session_id=f"flood-{i}", type=pb.EVENT_TYPE_PAGE_VIEW)
                        for i in range(first, min(first + BATCH, args.sessions))
                    ]
                    client.track_events(events)
                    sent = first + len(events)
                    if sent % 50_000 == 0 or sent == args.sessions:
                        samples.append((sent, resident_mb(pid)))
                        held_max = max(held_max, metric_sum(server.metrics(), "tailor_sessions"))
                        print(f"{sent:>9} sessions sent: {samples[-1][1]:7.1f} MB resident", flush=True)
            seconds = time.perf_counter() - started
            peak = resident_mb(pid, peak=True)
            text = server.metrics()
            held = metric_sum(text, "tailor_sessions")
            evicted = metric_sum(text, "tailor_sessions_evicted_total")
        finally:
            server.stop()
    baseline = samples[0][1]
    at_cap = min(samples, key=lambda s: abs(s[0] - args.cap))
    half = [s for s in samples if s[0] >= args.sessions // 2]
    first_half_growth = half[0][1] - baseline
    second_half_growth = samples[-1][1] - half[0][1]
    per_session = (at_cap[1] - baseline) * 1024 * 1024 / max(1, at_cap[0])
    result: dict[str, Any] = {
        "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "sessions_sent": args.sessions,
        "cap": args.cap,
        "seconds": seconds,
        "sessions_held_max": held_max,
        "sessions_held_end": held,
        "sessions_evicted": evicted,
        "rss_mb_start": baseline,
        "rss_mb_peak": peak,
        "bytes_per_session": per_session,
        "growth_mb_first_half": first_half_growth,
        "growth_mb_second_half": second_half_growth,
        "samples": samples,
        "cap_kept": held_max <= args.cap,
    }
    table = "\n".join(
        [
            "# Memory under a flood of session ids",
            "",
            f"{result['when']}, `python -m benchmarks.memory --sessions {args.sessions} --cap {args.cap}`: one page "
            f"view for each of {args.sessions:,} distinct session ids in {seconds:.0f} s "
            f"({args.sessions / seconds:,.0f} sessions/s).",
            "",
            "| figure | value |",
            "|---|---:|",
            f"| sessions held, at most (cap {args.cap:,}) | {held_max:,.0f} |",
            f"| sessions evicted by the cap | {evicted:,.0f} |",
            f"| resident memory at start | {baseline:,.0f} MB |",
            f"| peak resident memory | {peak:,.0f} MB |",
            f"| memory per session held (growth to the cap / the cap) | {per_session:,.0f} bytes |",
            f"| growth over the first half of the flood | {first_half_growth:,.0f} MB |",
            f"| growth over the second half (cap reached: evictions only) | {second_half_growth:,.0f} MB |",
            "",
            f"Cap kept: {'yes' if result['cap_kept'] else 'NO'}.",
            "",
        ]
    )
    publish(args.out, result, table)
    return 0 if result["cap_kept"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
