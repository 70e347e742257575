"""The gRPC face of the decision service: protobuf in, validated query to the core, protobuf out."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import grpc

from tailor.v1 import decision_service_pb2 as pb
from tailor.v1 import decision_service_pb2_grpc as pb_grpc

from . import _validation as validate
from ._config import Limits
from ._decision_log import Decision
from ._decisions import DecisionService
from ._errors import stream_errors, unary_errors
from ._joiner import JoinStatus
from ._metrics import Metrics

_STATUS = {
    JoinStatus.ACCEPTED: pb.REWARD_STATUS_ACCEPTED,
    JoinStatus.DUPLICATE: pb.REWARD_STATUS_DUPLICATE,
    JoinStatus.UNKNOWN_EVENT: pb.REWARD_STATUS_UNKNOWN_EVENT,
    JoinStatus.LATE: pb.REWARD_STATUS_LATE,
    JoinStatus.INVALID: pb.REWARD_STATUS_INVALID,
}

Ctx = grpc.aio.ServicerContext[Any, Any]


def decide_response(d: Decision) -> pb.DecideResponse:
    return pb.DecideResponse(
        event_id=d.event_id,
        action_id=d.action_id,
        probability=d.probability,
        # dicts are converted by the upb constructor ~2x faster than RankedAction objects
        ranking=[{"action_id": a, "probability": p} for a, p in d.ranking],  # type: ignore[misc]
        payload=d.payload,
        model_version=d.model_version,
    )


class DecisionServicer(pb_grpc.DecisionServiceServicer):
    def __init__(self, service: DecisionService, limits: Limits, metrics: Metrics) -> None:
        self.service = service
        self.limits = limits
        self.metrics = metrics

    def record_error(self, method: str, code: grpc.StatusCode) -> None:
        self.metrics.rpc_errors.labels(method, code.name).inc()

    @unary_errors
    async def Decide(self, request: pb.DecideRequest, context: Ctx) -> pb.DecideResponse:
        query = validate.decide_query(request, self.limits)
        return decide_response(self.service.decide(query))

    @stream_errors
    async def ReportRewards(
        self, request_iterator: AsyncIterator[pb.ReportRewardsRequest], context: Ctx
    ) -> AsyncIterator[pb.ReportRewardsResponse]:
        joiner = self.service.joiner
        async for request in request_iterator:
            validate.batch_size("rewards", len(request.rewards), self.limits)
            now = time.time()
            results = [
                pb.RewardResult(
                    event_id=r.event_id, status=_STATUS[joiner.report(r.event_id, r.value, r.reward_id, now)]
                )
                for r in request.rewards
            ]
            yield pb.ReportRewardsResponse(results=results)

    async def TrackEvents(
        self, request_iterator: AsyncIterator[pb.TrackEventsRequest], context: Ctx
    ) -> pb.TrackEventsResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "session context is not available in this version yet")
        raise AssertionError("unreachable")

    async def GetSession(self, request: pb.GetSessionRequest, context: Ctx) -> pb.GetSessionResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "session context is not available in this version yet")
        raise AssertionError("unreachable")

    async def DeleteSession(self, request: pb.DeleteSessionRequest, context: Ctx) -> pb.DeleteSessionResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "session context is not available in this version yet")
        raise AssertionError("unreachable")

    @unary_errors
    async def Activate(self, request: pb.ActivateRequest, context: Ctx) -> pb.ActivateResponse:
        self.service.joiner.activate(validate.event_id(request.event_id, self.limits), time.time())
        return pb.ActivateResponse()
