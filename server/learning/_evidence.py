"""The decision log's writer side: each learned decision (and each deferred one never activated) becomes a
DSJSON line (`server.state.evidence`), pseudonymised, handed to where the log lives: the data directory's
rotated files (embedded) or the leading learner's next publish (Redis mode)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from server.core import Metrics, RateLimitedLog
from server.state.decision_log import DecisionRecord, Source
from server.state.evidence import Outcome, Pseudonymizer, dsjson_line

log = logging.getLogger("tailor.evidence")
_limited = RateLimitedLog(log, seconds=10.0)


class EvidenceRecorder:
    def __init__(
        self,
        write: Callable[[str], None],
        pseudonymize: Pseudonymizer,
        metrics: Metrics,
        flush: Callable[[], None] = lambda: None,
    ) -> None:
        self.write = write
        self.pseudonymize = pseudonymize
        self.metrics = metrics
        self._flush = flush

    def flush(self) -> None:
        """Push what was written to where the log lives (after each learner slice); a failure (a full disk) is
        counted and logged, never raised: learning goes on, and the lines come back when the disk has room."""
        try:
            self._flush()
        except Exception:
            self.metrics.decision_log_errors.inc()
            _limited.log(logging.ERROR, "flush", "decision log lines not written", exc_info=True)

    def learned(self, record: DecisionRecord, reward: float, source: Source) -> None:
        self._record(record, reward, source)

    def unactivated(self, record: DecisionRecord) -> None:
        """A deferred decision whose window never started: logged with `_skipLearn`, never learned."""
        self._record(record, record.default_reward, "unactivated")

    def _record(self, record: DecisionRecord, reward: float, outcome: Outcome) -> None:
        try:
            line = dsjson_line(record, reward, outcome, time.time(), self.pseudonymize)
            self.write(line)
        except Exception:  # never let the log stop learning; counted, and a line per 10 s at most
            self.metrics.decision_log_errors.inc()
            _limited.log(logging.ERROR, "line", "decision %s not logged", record.event_id, exc_info=True)
            return
        self.metrics.decision_log_lines.labels(record.decision_point, outcome).inc()
