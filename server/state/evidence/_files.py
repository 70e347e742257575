"""The durable decision log in the data directory (embedded mode): DSJSON lines in rotated files.

`DATA_DIR/decisions/decisions-<UTC start, µs>-<n>.dsjson` (names sort in the order started), one line per learned
decision (`_format.py`), appended in the order the decisions were learned. A file is closed and a new one started
when it reaches `max_file_bytes` or has been open `rotate_seconds`; closed files older than `retention_seconds`, and
the oldest beyond `max_total_bytes`, are deleted. Lines are flushed to the file after every learner slice and
fsynced when a file is closed and at shutdown, so a crash loses at most the lines of the decisions learned in the
last slice, together with what the model learned from them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from .._files import fsync_dir

log = logging.getLogger("tailor.evidence")

PREFIX, SUFFIX = "decisions-", ".dsjson"


def installation_key(path: Path) -> bytes:
    """The installation's pseudonymisation key: read from `path`, or made (32 random bytes, mode 0600)."""
    if path.exists():
        return bytes.fromhex(path.read_text().strip())
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key.hex() + "\n")
    fsync_dir(path.parent)
    return key


class FileEvidenceLog:
    def __init__(
        self,
        root: Path,
        max_file_bytes: int = 64 << 20,
        rotate_seconds: float = 3600.0,
        retention_seconds: float = 7 * 86400.0,
        max_total_bytes: int = 1 << 30,
    ) -> None:
        self.root = root
        self.max_file_bytes = max_file_bytes
        self.rotate_seconds = rotate_seconds
        self.retention_seconds = retention_seconds
        self.max_total_bytes = max_total_bytes
        root.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] | None = None
        self._path: Path | None = None
        self._opened = 0.0
        self._size = 0
        self.lines = 0

    def write(self, line: str) -> None:
        now = time.time()
        if self._file is None or self._size >= self.max_file_bytes or now - self._opened >= self.rotate_seconds:
            self._rotate(now)
        assert self._file is not None
        self._file.write(line + "\n")
        self._size += len(line) + 1
        self.lines += 1

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            file, self._file = self._file, None
            try:
                file.flush()
                os.fsync(file.fileno())
            finally:
                with contextlib.suppress(OSError):  # what could not be flushed (a full disk) is lost; it raised above
                    file.close()

    def _rotate(self, now: float) -> None:
        self.close()
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f"{int(now % 1 * 1e6):06d}Z"
        n = 0
        path = self.root / f"{PREFIX}{stamp}-{n:04d}{SUFFIX}"
        while path.exists():  # two rotations within a microsecond (or a clock stepped back)
            n += 1
            path = self.root / f"{PREFIX}{stamp}-{n:04d}{SUFFIX}"
        self._file = path.open("a", encoding="utf-8")
        fsync_dir(self.root)
        self._path, self._opened, self._size = path, now, 0
        self._prune(now)

    def _prune(self, now: float) -> None:
        """Delete closed files past the retention, then the oldest while the total is over its bound."""
        closed = [p for p in files(self.root) if p != self._path]
        total = sum(p.stat().st_size for p in files(self.root))
        for path in closed:
            size = path.stat().st_size
            if now - path.stat().st_mtime > self.retention_seconds or total > self.max_total_bytes:
                path.unlink(missing_ok=True)
                total -= size
                log.info("decision log %s deleted (retention)", path.name, extra={"event": "decision_log_pruned"})


def files(root: Path) -> list[Path]:
    """The log's files, oldest first (their names sort by the time they were started)."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.name.startswith(PREFIX) and p.name.endswith(SUFFIX))


def read_files(root: Path) -> Iterator[str]:
    """Every line of the log, in the order written (a torn last line of a crash is skipped by the reader)."""
    for path in files(root):
        with path.open(encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.strip():
                    yield line.rstrip("\n")
