"""The guard in front of every handler: who may call (keys, roles, protected mode) and how many at once.

The checks are wrapped around each method handler once, when the servicers are registered (`CallGuard.register`),
not run as a grpc.aio server interceptor: grpc.aio awaits an interceptor chain on every call, a cost every
call would pay for a lookup that never changes.

At the start of every call except health checks, in this order:

1. **Authentication.** With API keys configured, `authorization: Bearer <key>` must name a known key
   (`UNAUTHENTICATED` otherwise) that has the method's role (`PERMISSION_DENIED`). Without keys the server
   is in *protected mode*: only callers from `local_networks` (loopback) are served, others get
   `UNAUTHENTICATED` saying how to configure keys or pass `--insecure`.
2. **Overload.** At most `max_in_flight` calls run at once; an open stream holds its slot until it ends.
   Past the bound the call gets `RESOURCE_EXHAUSTED` at once, never a queue.
3. **Deadlines.** A call whose deadline has already passed is not computed (`DEADLINE_EXCEEDED`).

Health checks skip all three, so probes work without keys and are never shed. Rejections are counted by
reason; their log lines are rate-limited, and no key ever reaches a log line or a metric label.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import urllib.parse
from collections.abc import AsyncIterator, Callable, Sequence
from contextvars import ContextVar
from typing import Any, TypeAlias

import grpc

from server.core import Metrics, RateLimitedLog

from ._keys import ANY_KEY_PREFIXES, METHOD_ROLES, OPEN_PREFIXES, KeyRing

log = logging.getLogger("tailor.guard")
#: Who the current call is from: a key's name, "local" (protected mode) or "anonymous" (--insecure). Set by
#: the guard before the handler runs, in the call's own task.
_CALLER: ContextVar[str] = ContextVar("tailor_caller", default="local")


def caller() -> str:
    """The current call's caller, for audit events (never the key itself)."""
    return _CALLER.get()


Ctx = grpc.aio.ServicerContext[Any, Any]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
Generic: TypeAlias = "grpc.GenericRpcHandler[Any, Any]"

LOOPBACK: tuple[str, ...] = ("127.0.0.0/8", "::1/128")

NO_KEY = "missing API key: send `authorization: Bearer <key>` metadata (keys are made with `tailor keys new`)"
UNKNOWN_KEY = "unknown API key"
NOT_LOCAL = (
    "this server has no API keys configured, so it serves only local callers (protected mode): start it with "
    "--api-keys FILE and send `authorization: Bearer <key>` (see `tailor keys new` and SECURITY.md), "
    "or pass --insecure to serve every caller without keys"
)


class _Rejected(Exception):
    def __init__(self, code: grpc.StatusCode, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message


@functools.lru_cache(maxsize=4096)
def _peer_address(peer: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP address in a gRPC peer string (`ipv4:1.2.3.4:5`, `ipv6:%5B::1%5D:5`: gRPC percent-encodes the
    brackets of an IPv6 peer)."""
    kind, _, rest = urllib.parse.unquote(peer).partition(":")
    if kind == "ipv4":
        return ipaddress.IPv4Address(rest.rpartition(":")[0])
    if kind == "ipv6":
        address = ipaddress.IPv6Address(rest.rpartition(":")[0].strip("[]").split("%")[0])
        return address.ipv4_mapped or address  # `::ffff:127.0.0.1` on a dual-stack `[::]` socket
    raise ValueError(f"peer {peer!r} is not an IP address")


class CallGuard:
    def __init__(
        self,
        metrics: Metrics,
        keys: KeyRing | None,
        max_in_flight: int,
        insecure: bool = False,
        local_networks: Sequence[str] = LOOPBACK,
    ) -> None:
        self.metrics = metrics
        self.keys = keys
        self.max_in_flight = max_in_flight
        self.insecure = insecure
        self.local_networks: tuple[Network, ...] = tuple(ipaddress.ip_network(n) for n in local_networks)
        self.in_flight = 0
        self._handlers: dict[str, Handler] = {}
        self._log = RateLimitedLog(log, seconds=10.0)
        metrics.rpcs_in_flight.set_function(lambda: self.in_flight)

    def register(self, server: grpc.aio.Server) -> Any:
        """`server` as the generated `add_*_to_server` functions (and reflection) should see it: every method handler
        registered through it is wrapped with the checks, once; health checks pass unwrapped."""
        return _Guarded(self, server)

    def guarded(self, method: str, inner: Handler) -> Handler:
        """`inner` with the checks in front (cached per method), or as it is for the open methods."""
        if method.startswith(OPEN_PREFIXES):
            return inner
        handler = self._handlers.get(method)
        if handler is None:
            handler = self._handlers[method] = self._wrap(method, inner)
        return handler

    # -- the checks ------------------------------------------------------------------------------------

    def _admit(self, method: str, context: Ctx) -> None:
        """Raise _Rejected unless this call may run now; on return the call holds an in-flight slot, and
        `caller()` names who is calling (for audit events)."""
        if self.keys is not None:
            _CALLER.set(self._authorize(method, context))
        elif not self.insecure:
            self._protect(context)
            _CALLER.set("local")
        else:
            _CALLER.set("anonymous")
        if self.in_flight >= self.max_in_flight:
            raise _Rejected(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "overload",
                f"server busy: {self.max_in_flight} calls in flight (--max-in-flight); retry with backoff",
            )
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            raise _Rejected(
                grpc.StatusCode.DEADLINE_EXCEEDED, "deadline", "the call's deadline passed before it started"
            )
        self.in_flight += 1

    def _authorize(self, method: str, context: Ctx) -> str:
        """The caller's key name, if its key may call `method`."""
        assert self.keys is not None
        token = None
        for key, value in context.invocation_metadata() or ():
            if key == "authorization":
                token = value.decode() if isinstance(value, bytes) else value
                break
        if token is None:
            raise _Rejected(grpc.StatusCode.UNAUTHENTICATED, "missing_key", NO_KEY)
        scheme, _, secret = token.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise _Rejected(grpc.StatusCode.UNAUTHENTICATED, "malformed", "use `authorization: Bearer <key>`")
        found = self.keys.authenticate(secret.strip())
        if found is None:
            raise _Rejected(grpc.StatusCode.UNAUTHENTICATED, "unknown_key", UNKNOWN_KEY)
        if method.startswith(ANY_KEY_PREFIXES):
            return found.name
        role = METHOD_ROLES.get(method, "admin")
        if not found.allows(role):
            raise _Rejected(
                grpc.StatusCode.PERMISSION_DENIED,
                "permission_denied",
                f"key {found.name!r} lacks the role {role!r} that {method.rsplit('/', 1)[-1]} needs",
            )
        return found.name

    def _protect(self, context: Ctx) -> None:
        peer = context.peer()
        try:
            address = _peer_address(peer)
        except ValueError:
            if peer.startswith(("unix:", "unix-abstract:")):
                return  # a unix socket: only this machine can reach it
            address = None
        if address is None or not any(address in n for n in self.local_networks):
            raise _Rejected(grpc.StatusCode.UNAUTHENTICATED, "not_local", NOT_LOCAL)

    async def _reject(self, method: str, context: Ctx, rejected: _Rejected) -> None:
        self.metrics.rpcs_rejected.labels(rejected.reason).inc()
        self._log.warning(
            rejected.reason,
            "rejected %s: %s (peer %s)",
            method,
            rejected.reason,
            context.peer(),
            extra={
                "event": "overloaded" if rejected.reason == "overload" else "call_rejected",
                "method": method,
                "reason": rejected.reason,
                "peer": context.peer(),
            },
        )
        await context.abort(rejected.code, rejected.message)

    # -- wrapping every kind of handler ----------------------------------------------------------------

    def _wrap(self, method: str, inner: Handler) -> Handler:
        """The handler with the checks in front, and a request decoder that never raises: bytes that are not
        the request message (malformed protobuf, invalid UTF-8 in a string) become INVALID_ARGUMENT, where
        gRPC's own decoder failure would end the call UNKNOWN with its internals in the message."""
        guard = self
        decode, undecodable = _safe_decoder(inner.request_deserializer)

        async def checked(requests: AsyncIterator[Any], context: Ctx) -> AsyncIterator[Any]:
            async for request in requests:
                if request is _UNDECODABLE:
                    await guard._reject(method, context, undecodable)
                yield request

        if inner.unary_unary or inner.stream_unary:
            behaviour: Any = inner.unary_unary or inner.stream_unary
            streamed = inner.stream_unary is not None

            async def unary_response(request: Any, context: Ctx) -> Any:
                try:
                    guard._admit(method, context)
                except _Rejected as rejected:
                    await guard._reject(method, context, rejected)
                try:
                    if streamed:
                        request = checked(request, context)
                    elif request is _UNDECODABLE:
                        await guard._reject(method, context, undecodable)
                    return await behaviour(request, context)
                finally:
                    guard.in_flight -= 1

            make = grpc.unary_unary_rpc_method_handler if inner.unary_unary else grpc.stream_unary_rpc_method_handler
            return make(unary_response, decode, inner.response_serializer)

        streaming: Any = inner.unary_stream or inner.stream_stream
        streamed_in = inner.stream_stream is not None

        async def stream_response(request: Any, context: Ctx) -> AsyncIterator[Any]:
            try:
                guard._admit(method, context)
            except _Rejected as rejected:
                await guard._reject(method, context, rejected)
            try:
                if streamed_in:
                    request = checked(request, context)
                elif request is _UNDECODABLE:
                    await guard._reject(method, context, undecodable)
                async for item in streaming(request, context):
                    yield item
            finally:
                guard.in_flight -= 1

        make = grpc.unary_stream_rpc_method_handler if inner.unary_stream else grpc.stream_stream_rpc_method_handler
        return make(stream_response, decode, inner.response_serializer)


class _Guarded:
    """A server whose registrations go through the guard (see `CallGuard.register`)."""

    def __init__(self, guard: CallGuard, server: grpc.aio.Server) -> None:
        self._guard = guard
        self._server = server

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Handler]) -> None:
        guarded = {name: self._guard.guarded(f"/{service}/{name}", h) for name, h in handlers.items()}
        self._server.add_registered_method_handlers(service, guarded)  # type: ignore[attr-defined]

    def add_generic_rpc_handlers(self, handlers: Sequence[Generic]) -> None:
        self._server.add_generic_rpc_handlers(tuple(_GuardedGeneric(self._guard, h) for h in handlers))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._server, name)


class _GuardedGeneric(grpc.GenericRpcHandler):  # type: ignore[type-arg]
    """A generic handler whose method handlers come with the checks (registered methods take precedence; this
    answers the rest, e.g. reflection)."""

    def __init__(self, guard: CallGuard, inner: Generic) -> None:
        self._guard = guard
        self._inner = inner

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Handler | None:
        inner = self._inner.service(handler_call_details)
        if inner is None:  # not one of its methods: grpc answers UNIMPLEMENTED if no other handler has it
            return None
        return self._guard.guarded(handler_call_details.method, inner)


_UNDECODABLE = object()


def _safe_decoder(decode: Callable[[bytes], Any] | None) -> tuple[Callable[[bytes], Any] | None, _Rejected]:
    """`decode`, returning a marker instead of raising, and the refusal that marker stands for."""
    message = getattr(getattr(decode, "__self__", None), "DESCRIPTOR", None)
    name = message.full_name if message is not None else "request"
    rejected = _Rejected(
        grpc.StatusCode.INVALID_ARGUMENT,
        "undecodable",
        f"the request is not a valid {name} message (malformed protobuf, or a string field that is not UTF-8)",
    )
    if decode is None:
        return None, rejected

    def safe(data: bytes) -> Any:
        try:
            return decode(data)
        except Exception:  # DecodeError, or anything a decoder raises on hostile bytes
            return _UNDECODABLE

    return safe, rejected
