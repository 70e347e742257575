"""The gRPC face: protobuf in, validated values to the core, protobuf out, errors as statuses.

- `DecisionServicer`: `tailor.v1.DecisionService`'s handlers.
- `_validation.py`: every request field checked, every violation named.
- `_status.py`: the one place a `TailorError` (or an unexpected error) becomes a gRPC status.
Interceptors (authentication, overload) belong here too.

Imports: everything below it on the request path, and `tailor.v1`.
"""

from ._servicer import DecisionServicer, decide_response
from ._status import abort_for, stream_errors, to_status, unary_errors

__all__ = ["DecisionServicer", "abort_for", "decide_response", "stream_errors", "to_status", "unary_errors"]
