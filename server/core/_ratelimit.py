"""Rate-limited log lines, for events that can repeat thousands of times a second (rejected calls,
fail-open): the first line of a kind is written at once, then at most one per interval, saying how many
were left out since (also as the field `left_out`, with the call's `extra` fields, in JSON logs)."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any


class RateLimitedLog:
    def __init__(self, logger: logging.Logger, seconds: float = 10.0) -> None:
        self.logger = logger
        self.seconds = seconds
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, kind: str, message: str, *args: Any, extra: Mapping[str, Any] | None = None) -> None:
        self.log(logging.WARNING, kind, message, *args, extra=extra)

    def log(
        self,
        level: int,
        kind: str,
        message: str,
        *args: Any,
        exc_info: bool = False,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        """Log `message` unless a line of this `kind` was written less than `seconds` ago."""
        now = time.monotonic()
        last = self._last.get(kind)
        if last is not None and now - last < self.seconds:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return
        self._last[kind] = now
        left_out = self._suppressed.pop(kind, 0)
        if left_out:
            message += " (and %d more like it in the last %.0f s)"
            args = (*args, left_out, now - last if last is not None else 0.0)
            extra = {**(extra or {}), "left_out": left_out}
        self.logger.log(level, message, *args, exc_info=exc_info, extra=extra)
