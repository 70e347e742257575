"""What one refused call costs the server: `--max-in-flight 1` held by an open stream, then 48 closed-loop
callers whose every Decide is refused (RESOURCE_EXHAUSTED) and retried after 5 ms, for 5 s.

    .venv/bin/python -m benchmarks.overload.refusal_cost

Prints the refusals and the server CPU per refused call (decoding, HTTP/2, the interceptor, the status).
"""

from __future__ import annotations

import asyncio
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc

from server.tools.launcher import ServeProcess, cpu_seconds
from tailor.v1 import decision_service_pb2 as pb
from tailor.v1 import decision_service_pb2_grpc as pb_grpc

from .__main__ import drive, write_catalog


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="tailor-refusal-") as tmp:
        catalogs = Path(tmp) / "catalogs"
        catalogs.mkdir()
        write_catalog(catalogs)
        server = ServeProcess(catalogs, Path(tmp) / "data", ["--max-in-flight", "1"]).start()
        assert server.proc is not None
        channel = grpc.insecure_channel(server.target)
        release = threading.Event()

        def requests() -> Iterator[pb.TrackEventsRequest]:
            yield pb.TrackEventsRequest(events=[pb.SessionEvent(session_id="held", type=pb.EVENT_TYPE_PAGE_VIEW)])
            release.wait(60)

        held = pb_grpc.DecisionServiceStub(channel).TrackEvents.future(requests(), timeout=60)
        time.sleep(1)
        before = cpu_seconds(server.proc.pid)
        result = asyncio.run(drive(server.target, 48, 5.0))
        spent = cpu_seconds(server.proc.pid) - before
        release.set()
        held.result()
        channel.close()
        server.stop()
    refused = result["codes"].get("RESOURCE_EXHAUSTED", 0)
    print(f"{refused} refusals in 5 s ({refused / 5:.0f}/s), other statuses {result['codes']}")
    print(f"server CPU per refused call: {spent / max(1, refused) * 1e6:.0f} µs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
