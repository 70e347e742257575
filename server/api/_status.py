"""The one place that maps Tailor's errors to gRPC statuses.

Handlers raise `server.core.TailorError`s; `unary_errors` / `stream_errors` turn them into a status with
a `google.rpc.Status` carrying `BadRequest` field violations where there are some. Anything else becomes
INTERNAL with an error id that is logged with the traceback, never the exception text, so nothing
internal leaks to clients.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from server.core._errors import InvalidArgument, TailorError

log = logging.getLogger("tailor.errors")


_CODE_NUMBERS = {c: c.value[0] for c in grpc.StatusCode}


def to_status(err: TailorError) -> grpc.Status:
    """The rich gRPC status for a Tailor error."""
    status = status_pb2.Status(code=_CODE_NUMBERS[err.code], message=str(err))
    if isinstance(err, InvalidArgument):
        detail = any_pb2.Any()
        detail.Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                    for v in err.violations
                ]
            )
        )
        status.details.append(detail)
    result: grpc.Status = rpc_status.to_status(status)
    return result


Ctx = grpc.aio.ServicerContext[Any, Any]
T = TypeVar("T")
_PASS_THROUGH = (grpc.aio.AbortError, grpc.aio.UsageError, asyncio.CancelledError)


async def abort_for(servicer: Any, context: Ctx, method: str, err: Exception) -> NoReturn:
    """End the RPC with the status for `err`; count it through the servicer's `record_error`, if any."""
    record = getattr(servicer, "record_error", None)
    if isinstance(err, TailorError):
        if record is not None:
            record(method, err.code)
        status = to_status(err)
        await context.abort(status.code, status.details, status.trailing_metadata)
    if record is not None:
        record(method, grpc.StatusCode.INTERNAL)
    error_id = uuid.uuid4().hex[:12]
    log.error(
        "internal error %s in %s",
        error_id,
        method,
        exc_info=err,
        extra={"event": "internal_error", "error_id": error_id, "method": method},
    )
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error (id {error_id}); see the server log")


def unary_errors(
    handler: Callable[[Any, Any, Ctx], Awaitable[T]],
) -> Callable[[Any, Any, Ctx], Awaitable[T]]:
    """Map Tailor errors (and unexpected ones) to statuses for a unary-response handler."""

    @functools.wraps(handler)
    async def wrapper(self: Any, request: Any, context: Ctx) -> T:
        try:
            return await handler(self, request, context)
        except _PASS_THROUGH:
            raise
        except Exception as err:
            await abort_for(self, context, handler.__name__, err)

    return wrapper


def stream_errors(
    handler: Callable[[Any, Any, Ctx], AsyncIterator[T]],
) -> Callable[[Any, Any, Ctx], AsyncIterator[T]]:
    """The same mapping for a streaming-response handler."""

    @functools.wraps(handler)
    async def wrapper(self: Any, request: Any, context: Ctx) -> AsyncIterator[T]:
        try:
            async for item in handler(self, request, context):
                yield item
        except _PASS_THROUGH:
            raise
        except Exception as err:
            await abort_for(self, context, handler.__name__, err)

    return wrapper
