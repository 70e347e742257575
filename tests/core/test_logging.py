"""The JSON log format: one object per line, tracebacks inside it; warnings and uncaught exceptions too."""

from __future__ import annotations

import io
import json
import logging
import re
import subprocess
import sys
import textwrap

from server.core import JsonLogFormatter

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def test_an_exception_is_one_line_with_the_traceback_in_a_field() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLogFormatter())
    logger = logging.getLogger("t.logging.json")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        try:
            1 / 0  # noqa: B018
        except ZeroDivisionError:
            logger.exception("internal error %s in %s", "ab12", "Decide", extra={"event": "internal_error", "seq": 3})
        logger.warning("plain")
    finally:
        logger.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert list(first)[:5] == ["time", "level", "logger", "message", "event"]
    assert ISO_UTC.match(first["time"]), first["time"]
    assert (first["level"], first["logger"]) == ("ERROR", "t.logging.json")
    assert first["message"] == "internal error ab12 in Decide"
    assert (first["event"], first["seq"]) == ("internal_error", 3)
    assert first["exception"].startswith("Traceback (most recent call last):")
    assert "ZeroDivisionError: division by zero" in first["exception"]
    assert "exc_info" not in first and "args" not in first and "msg" not in first
    assert second == {"time": second["time"], "level": "WARNING", "logger": "t.logging.json", "message": "plain"}


def test_in_json_mode_warnings_and_uncaught_exceptions_are_json_lines() -> None:
    """A real process: configure_logging, then a warning, an exception dying in a thread and in main."""
    program = textwrap.dedent(
        """
        import threading, warnings
        from server.core import configure_logging
        configure_logging("INFO", "json")
        warnings.warn("an old API")
        thread = threading.Thread(target=lambda: 1 / 0, name="worker")
        thread.start()
        thread.join()
        raise RuntimeError("boom")
        """
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stdout == ""
    records = [json.loads(line) for line in done.stderr.splitlines()]
    assert [(r["logger"], r.get("event")) for r in records] == [
        ("py.warnings", None),
        ("tailor", "uncaught_exception"),
        ("tailor", "uncaught_exception"),
    ]
    assert "an old API" in records[0]["message"]
    assert "worker" in records[1]["message"] and "ZeroDivisionError" in records[1]["exception"]
    assert records[2]["level"] == "CRITICAL" and "RuntimeError: boom" in records[2]["exception"]
