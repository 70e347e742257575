"""Rate-limited log lines: the first at once, then one per interval saying how many were left out."""

from __future__ import annotations

import logging
import time

import pytest

from server.core import RateLimitedLog


def test_repeats_are_summarised_not_written(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="t.ratelimit")
    limited = RateLimitedLog(logging.getLogger("t.ratelimit"), seconds=0.2)
    for i in range(100):
        limited.warning("overload", "refused call %d", i)
    limited.warning("other", "another kind")  # kinds are limited separately
    assert [r.getMessage() for r in caplog.records] == ["refused call 0", "another kind"]
    time.sleep(0.25)
    limited.warning("overload", "refused call %d", 100)
    assert caplog.records[-1].getMessage().startswith("refused call 100 (and 99 more like it in the last")
