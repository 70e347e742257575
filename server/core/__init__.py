"""The foundation every other room stands on: configuration, the exception tree, metrics, event vocabulary.

- `ServeConfig`, `LearnConfig`, `Limits`: validated settings (flags, then TAILOR_* variables, then defaults).
- `TailorError` and its subclasses: what a handler raises; each names its gRPC status code. The map from an
  error to a status with field violations is the gRPC face's job (`server.api`).
- `Metrics`: every Prometheus metric, built on an injected registry.
- `EventKind`, `TrackedEvent`: what a validated behaviour event is.
- `RateLimitedLog`: log lines for events that can repeat thousands of times a second.
- `configure_logging`: text or JSON lines (`--log-format`); what a log line may and may not carry.

Imports: nothing else of Tailor's (`policies` and `tailor` included).
"""

from ._config import LearnConfig, Limits, ServeConfig
from ._errors import (
    Aborted,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    TailorError,
    Unavailable,
    invalid,
)
from ._events import EVENT_KINDS, EventKind, TrackedEvent
from ._logging import LOG_FORMATS, JsonLogFormatter, LogFormat, configure_logging
from ._metrics import DecideStats, Metrics
from ._ratelimit import RateLimitedLog

__all__ = [
    "EVENT_KINDS",
    "LOG_FORMATS",
    "Aborted",
    "DecideStats",
    "EventKind",
    "FailedPrecondition",
    "FieldViolation",
    "InvalidArgument",
    "JsonLogFormatter",
    "LearnConfig",
    "Limits",
    "LogFormat",
    "Metrics",
    "NotFound",
    "RateLimitedLog",
    "ResourceExhausted",
    "ServeConfig",
    "TailorError",
    "TrackedEvent",
    "Unavailable",
    "configure_logging",
    "invalid",
]
