"""How the process logs: human-readable text (the default) or one JSON object per line (`--log-format json`).

A JSON line has `time` (ISO 8601, UTC), `level`, `logger` and `message`, then `event` (a stable snake_case
name, on the significant events: `server_started`, `catalogs_reloaded`, `snapshot_written`,
`leader_acquired`, `fail_open`, `overloaded`, `internal_error`, …) and whatever structured fields the call
passed with `extra=` (`decision_point`, `port`, `error_id`, `seq`, …). A traceback is one field,
`exception`, inside the line, never lines of its own: a log shipper sees one record per event.

In JSON mode every line the process writes is JSON: Python warnings, uncaught exceptions (main thread and
other threads) and exceptions Python could only report as "ignored" go through logging too. gRPC's C core
writes past Python's logging; `server/__init__.py` keeps it to errors (`GRPC_VERBOSITY`) before grpc loads.

What a log line may carry: event ids, error ids, decision point names, counts, ports. Never API keys,
Bearer tokens, session ids, shopper or product data, or request payloads.
"""

from __future__ import annotations

import logging
import sys
import threading
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Literal, TextIO

from pythonjsonlogger.core import merge_record_extra
from pythonjsonlogger.json import JsonFormatter

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

log = logging.getLogger("tailor")


class JsonLogFormatter(JsonFormatter):
    """One JSON object per record, on one line: `time`, `level`, `logger`, `message`, then the extra fields
    (`event` first among them by convention of the call sites) and `exception` / `stack` when present."""

    def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]) -> None:
        created = datetime.fromtimestamp(record.created, UTC)
        log_data["time"] = created.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        log_data["level"] = record.levelname
        log_data["logger"] = record.name
        log_data["message"] = record.message
        merge_record_extra(record, log_data, reserved=self._skip_fields)
        for key, value in message_dict.items():  # the formatted exc_info / stack_info, or a dict logged as msg
            log_data[{"exc_info": "exception", "stack_info": "stack"}.get(key, key)] = value


def configure_logging(level: str = "INFO", fmt: LogFormat = "text", stream: TextIO | None = None) -> None:
    """Send every logger's records to `stream` (stderr) in `fmt`, at `level` and above; route warnings through
    logging, and in JSON mode uncaught exceptions too. Raises ValueError for an unknown level or format."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"unknown log format {fmt!r}: use one of {', '.join(LOG_FORMATS)}")
    if not isinstance(logging.getLevelName(level.upper()), int):
        raise ValueError(f"unknown log level {level!r}: use DEBUG, INFO, WARNING or ERROR")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonLogFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    logging.captureWarnings(True)
    if fmt == "json":
        sys.excepthook = _uncaught
        threading.excepthook = _uncaught_in_thread
        sys.unraisablehook = _unraisable


def _uncaught(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
    log.critical("uncaught %s", kind.__name__, exc_info=(kind, value, tb), extra={"event": "uncaught_exception"})


def _uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if issubclass(args.exc_type, SystemExit):  # as the default hook: a thread's sys.exit() is no error
        return
    log.critical(
        "uncaught %s in thread %s",
        args.exc_type.__name__,
        args.thread.name if args.thread is not None else "?",
        exc_info=args.exc_value if args.exc_value is not None else True,  # the exception carries its traceback
        extra={"event": "uncaught_exception"},
    )


def _unraisable(args: sys.UnraisableHookArgs) -> None:
    log.error(
        "%s: %r",
        args.err_msg or "Exception ignored in",
        args.object,
        exc_info=args.exc_value,
        extra={"event": "unraisable"},
    )
