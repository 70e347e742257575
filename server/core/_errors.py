"""Tailor's exception tree: what handlers raise, each with the gRPC status code it stands for.

The rich status (field violations, INTERNAL with an error id) is built in one place, `server/api/_status.py`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import grpc


@dataclass(frozen=True, slots=True)
class FieldViolation:
    field: str
    description: str


class TailorError(Exception):
    """Base of every error Tailor reports to a client."""

    code = grpc.StatusCode.INTERNAL


class InvalidArgument(TailorError):
    """The request is malformed; `violations` name each bad field."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, violations: Sequence[FieldViolation]) -> None:
        self.violations = list(violations)
        first = self.violations[0]
        more = f" (and {len(self.violations) - 1} more)" if len(self.violations) > 1 else ""
        super().__init__(f"{first.field}: {first.description}{more}")


class NotFound(TailorError):
    code = grpc.StatusCode.NOT_FOUND


class FailedPrecondition(TailorError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Aborted(TailorError):
    """A concurrent change won (optimistic concurrency): read again and retry."""

    code = grpc.StatusCode.ABORTED


class ResourceExhausted(TailorError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(TailorError):
    code = grpc.StatusCode.UNAVAILABLE


def invalid(field: str, description: str) -> InvalidArgument:
    return InvalidArgument([FieldViolation(field, description)])
