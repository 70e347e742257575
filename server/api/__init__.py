"""The gRPC face: protobuf in, validated values to the core, protobuf out, errors as statuses.

- `DecisionServicer`: `tailor.v1.DecisionService`'s handlers; `AdminServicer`: `tailor.v1.AdminService`'s.
- `_validation.py`: every request field checked, every violation named.
- `_status.py`: the one place a `TailorError` (or an unexpected error) becomes a gRPC status.
- `CallGuard`: the one interceptor: keys and roles (`_keys.py`), protected mode, the in-flight bound,
  expired deadlines.
- `ServerCertificates`: TLS for the gRPC port, re-read when the files change.

Imports: everything below it on the request path, and `tailor.v1`.
"""

from ._admin import AdminServicer
from ._guard import CallGuard, caller
from ._keys import METHOD_ROLES, ROLES, KeyFileError, KeyRing, Role, key_entry_yaml, new_key
from ._servicer import DecisionServicer, decide_response
from ._status import abort_for, stream_errors, to_status, unary_errors
from ._tls import ServerCertificates, TLSError

__all__ = [
    "METHOD_ROLES",
    "ROLES",
    "AdminServicer",
    "CallGuard",
    "DecisionServicer",
    "KeyFileError",
    "KeyRing",
    "Role",
    "ServerCertificates",
    "TLSError",
    "abort_for",
    "caller",
    "decide_response",
    "key_entry_yaml",
    "new_key",
    "stream_errors",
    "to_status",
    "unary_errors",
]
