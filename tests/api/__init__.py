"""Tests of the gRPC face: the call guard (keys, protected mode, TLS, bounds) and hostile input."""

from __future__ import annotations

from collections.abc import Callable

import grpc


def code_of(call: Callable[[], object]) -> grpc.StatusCode:
    """The status a call ends with (OK when it returns)."""
    try:
        call()
    except grpc.RpcError as err:
        code: grpc.StatusCode = err.code()
        return code
    return grpc.StatusCode.OK
