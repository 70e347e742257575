"""The embedded decision log: a dict plus a deadline heap, bounded by `capacity`.

Its content is written to the data directory at shutdown and read back at start-up so pending
decisions survive a graceful restart. The file (format 2) is a header line, then one decision per line
with a CRC-32 of its JSON:

    {"format": 2, "kind": "tailor-pending-decisions"}
    1a2b3c4d {"event_id": ..., ...}

A line whose checksum or JSON does not check out is skipped and counted, never a failed start. Files of
0.1 (no header, plain JSON lines) are read the same way, without checksums.
"""

from __future__ import annotations

import heapq
import json
import os
import zlib
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from ._base import DecisionRecord, JoinStatus, LearnSink, Source

PENDING_FORMAT = 2
_HEADER = {"format": PENDING_FORMAT, "kind": "tailor-pending-decisions"}


class InMemoryDecisionLog:
    """The embedded decision log: a dict by event id and a heap of window and expiry deadlines."""

    def __init__(
        self,
        capacity: int,
        learn: LearnSink,
        on_unactivated: Callable[[DecisionRecord], None] = lambda record: None,
        on_evicted: Callable[[DecisionRecord], None] = lambda record: None,
    ) -> None:
        self.capacity = capacity
        self._learn = learn
        self._on_unactivated = on_unactivated
        self._on_evicted = on_evicted
        self._learned_order: deque[str] = deque()  # learned decisions, oldest first: evicted first when full
        self._records: dict[str, DecisionRecord] = {}
        # (when, kind, event_id): kind 0 closes a window, 1 forgets the decision. Entries may be stale
        # (a window reopened by activation); each is checked against the record when it comes due.
        self._deadlines: list[tuple[float, int, str]] = []
        self._unlearned = 0

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[DecisionRecord]:
        return iter(self._records.values())

    def pending(self) -> int:
        """Decisions not yet learned (the join backlog)."""
        return self._unlearned

    async def get(self, event_id: str) -> DecisionRecord | None:
        return self._records.get(event_id)

    async def add(self, record: DecisionRecord) -> bool:
        return self.add_now(record)

    def add_now(self, record: DecisionRecord) -> bool:
        if len(self._records) >= self.capacity and not self._evict_learned():
            return False
        self._records[record.event_id] = record
        if not record.learned:
            self._unlearned += 1
        self._schedule(record)
        return True

    async def join(self, event_id: str, value: float, reward_id: str, at: float) -> JoinStatus:
        record = self._records.get(event_id)
        if record is None:
            return JoinStatus.UNKNOWN_EVENT
        low, high = record.reward_range
        if not low <= value <= high:
            return JoinStatus.INVALID
        if reward_id and reward_id in record.reward_ids:
            return JoinStatus.DUPLICATE
        end = record.window_end
        if record.learned or (end is not None and at > end):
            return JoinStatus.LATE
        if record.aggregation == "first" and record.rewards:  # held before activation; only the first counts
            return JoinStatus.LATE
        if reward_id:
            record.reward_ids += (reward_id,)
        if end is not None and record.aggregation == "first":
            self._hand_off(record, value, "reward")
        else:
            record.rewards += (value,)  # aggregated at window close, or held until activation
        return JoinStatus.ACCEPTED

    async def activate(self, event_id: str, now: float) -> bool:
        record = self._records.get(event_id)
        if record is None:
            return False
        if record.activated_at is None:
            record.activated_at = now
            self._schedule(record)
            if record.aggregation == "first" and record.rewards:
                self._hand_off(record, record.rewards[0], "reward")
        return True

    async def close_windows(self, now: float) -> int:
        closed, forgotten = self._due(now)
        for record in closed:
            if not record.rewards:
                self._hand_off(record, record.default_reward, "default")
            elif record.aggregation == "sum":
                self._hand_off(record, sum(record.rewards), "reward")
            else:  # max; `first` learned at its first reward and never reaches here with rewards
                self._hand_off(record, max(record.rewards), "reward")
        for record in forgotten:
            if record.activated_at is None:
                self._on_unactivated(record)
        return len(closed)

    async def discard(self, event_ids: Sequence[str]) -> None:
        for event_id in event_ids:
            record = self._records.pop(event_id, None)
            if record is not None and not record.learned:
                self._unlearned -= 1  # its heap entries find no record and are skipped

    def _hand_off(self, record: DecisionRecord, reward: float, source: Source) -> None:
        """Mark learned and give it to the learner: the one place a decision becomes learnable, once."""
        if not record.learned:
            record.learned = True
            self._unlearned -= 1
            self._learned_order.append(record.event_id)
            self._learn(record, reward, source)

    def _evict_learned(self) -> bool:
        """Make room by forgetting the oldest learned decision before its retention ends.

        A full log prefers losing what only serves replays and LATE statuses (a later reward for it then
        answers UNKNOWN_EVENT) to refusing a new decision its learning."""
        while self._learned_order:
            event_id = self._learned_order.popleft()
            record = self._records.get(event_id)
            if record is not None and record.learned:
                del self._records[event_id]
                self._on_evicted(record)
                return True
        return False

    def _schedule(self, record: DecisionRecord) -> None:
        end = record.window_end
        if end is not None and not record.learned:
            heapq.heappush(self._deadlines, (end, 0, record.event_id))
        heapq.heappush(self._deadlines, (record.expires_at, 1, record.event_id))

    def _due(self, now: float) -> tuple[list[DecisionRecord], list[DecisionRecord]]:
        closed: list[DecisionRecord] = []
        forgotten: list[DecisionRecord] = []
        heap = self._deadlines
        while heap and heap[0][0] <= now:
            _, kind, event_id = heapq.heappop(heap)
            record = self._records.get(event_id)
            if record is None:
                continue
            if kind == 0:
                end = record.window_end
                if not record.learned and end is not None and end <= now:
                    closed.append(record)
            elif record.expires_at <= now:
                del self._records[event_id]
                if not record.learned:
                    self._unlearned -= 1
                forgotten.append(record)
        return closed, forgotten

    def save(self, path: Path) -> int:
        """Write every retained decision, a checksum per line (atomically); returns how many."""
        tmp = path.with_suffix(".tmp")
        with tmp.open("w") as f:
            f.write(json.dumps(_HEADER) + "\n")
            for record in self._records.values():
                line = json.dumps(record.to_json(), separators=(",", ":"))
                f.write(f"{zlib.crc32(line.encode()):08x} {line}\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return len(self._records)

    def load(self, path: Path) -> tuple[int, int]:
        """Read decisions written by `save` (or by 0.1); returns (restored, lines skipped as corrupt)."""
        restored = corrupt = 0
        with path.open(errors="replace") as f:
            first = f.readline()
            checked = _is_header(first)
            lines = f if checked else [first, *f]
            for line in lines:
                if not line.strip():
                    continue
                record = _parse(line, checked)
                if record is None:
                    corrupt += 1
                elif self.add_now(record):
                    restored += 1
        return restored, corrupt


def _is_header(line: str) -> bool:
    try:
        doc = json.loads(line)
    except ValueError:
        return False
    return isinstance(doc, dict) and doc.get("kind") == _HEADER["kind"]


def _parse(line: str, checked: bool) -> DecisionRecord | None:
    """One retained decision, or None when the line is torn or corrupt."""
    text = line.rstrip("\n")
    if checked:
        crc, _, text = text.partition(" ")
        if crc != f"{zlib.crc32(text.encode()):08x}":
            return None
    try:
        return DecisionRecord.from_json(json.loads(text))
    except (ValueError, KeyError, TypeError):
        return None
