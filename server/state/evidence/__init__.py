"""The durable decision log: every learned decision as a line of VW's DSJSON (`_format.py`), kept for the
data scientists' export and offline evaluation: rotated files in the data directory (embedded), or a
stream in Redis written once per decision by the leading learner (Redis mode).

Imports: `server.state.decision_log`, `server.state._redis`, `policies`; nothing above state.
"""

from ._files import FileEvidenceLog, read_files
from ._files import installation_key as file_installation_key
from ._format import (
    LOG_FORMAT,
    LogFormatError,
    LoggedDecision,
    Outcome,
    Pseudonymizer,
    canonical,
    dsjson_line,
    read_line,
)
from ._redis import installation_key as redis_installation_key
from ._redis import pack, read_stream, stream_key, unpack

__all__ = [
    "LOG_FORMAT",
    "FileEvidenceLog",
    "LogFormatError",
    "LoggedDecision",
    "Outcome",
    "Pseudonymizer",
    "canonical",
    "dsjson_line",
    "file_installation_key",
    "pack",
    "read_files",
    "read_line",
    "read_stream",
    "redis_installation_key",
    "stream_key",
    "unpack",
]
