"""A small typed client for gateways.

with TailorClient("localhost:50051") as tailor:
    d = tailor.decide("session-1", "home_layout", context={"device": "mobile"})
    tailor.report_rewards([(d.event_id, 1.0, "click-1")])

Against a server with API keys and TLS:

with TailorClient("tailor.shop.internal:50051", api_key=key, root_certificates=Path("ca.pem").read_bytes()) as tailor:
    ...
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType

import grpc

from tailor.v1 import decision_service_pb2 as pb
from tailor.v1 import decision_service_pb2_grpc as pb_grpc

Scalar = str | float | int


def feature_map(values: Mapping[str, Scalar]) -> dict[str, pb.FeatureValue]:
    """Plain values to FeatureValues: strings are categorical, numbers numeric."""
    out: dict[str, pb.FeatureValue] = {}
    for key, value in values.items():
        if isinstance(value, bool):
            raise TypeError(f"feature {key!r}: use a string or a number, not a bool")
        out[key] = pb.FeatureValue(text=value) if isinstance(value, str) else pb.FeatureValue(number=float(value))
    return out


class TailorClient:
    """Blocking client over one channel. Errors surface as grpc.RpcError with the server's status."""

    def __init__(
        self,
        target: str,
        *,
        api_key: str | None = None,
        root_certificates: bytes | None = None,
        client_cert: bytes | None = None,
        client_key: bytes | None = None,
        tls: bool = False,
        channel: grpc.Channel | None = None,
        timeout: float = 5.0,
    ) -> None:
        """`api_key` is sent as `authorization: Bearer` on every call. TLS is used when `tls` is set or any
        certificate is given: `root_certificates` (PEM) to trust instead of the system's roots, and
        `client_cert`/`client_key` (PEM) for a server that requires client certificates (mTLS)."""
        if channel is None:
            if tls or root_certificates is not None or client_cert is not None or client_key is not None:
                credentials = grpc.ssl_channel_credentials(root_certificates, client_key, client_cert)
                channel = grpc.secure_channel(target, credentials)
            else:
                channel = grpc.insecure_channel(target)
        self._channel = channel
        self._stub = pb_grpc.DecisionServiceStub(self._channel)
        self._metadata = (("authorization", f"Bearer {api_key}"),) if api_key else None
        self.timeout = timeout

    def decide(
        self,
        session_id: str,
        decision_point: str,
        *,
        context: Mapping[str, Scalar] | None = None,
        actions: Mapping[str, Mapping[str, Scalar]] | None = None,
        candidate_action_ids: Sequence[str] = (),
        excluded_action_ids: Sequence[str] = (),
        event_id: str = "",
        defer_activation: bool = False,
    ) -> pb.DecideResponse:
        """Ask for a decision. `actions` (id -> features) replaces the catalog's candidates."""
        request = pb.DecideRequest(
            session_id=session_id,
            decision_point=decision_point,
            context=feature_map(context or {}),
            actions=[pb.Action(id=a, features=feature_map(f)) for a, f in (actions or {}).items()],
            candidate_action_ids=candidate_action_ids,
            excluded_action_ids=excluded_action_ids,
            event_id=event_id,
            defer_activation=defer_activation,
        )
        response: pb.DecideResponse = self._stub.Decide(request, timeout=self.timeout, metadata=self._metadata)
        return response

    def report_rewards(self, rewards: Iterable[tuple[str, float, str]]) -> list[pb.RewardResult]:
        """Report (event_id, value, reward_id) rewards in one message; returns a status per reward."""
        request = pb.ReportRewardsRequest(rewards=[pb.Reward(event_id=e, value=v, reward_id=r) for e, v, r in rewards])
        responses = list(self._stub.ReportRewards(iter([request]), timeout=self.timeout, metadata=self._metadata))
        return [result for response in responses for result in response.results]

    def track_events(self, events: Sequence[pb.SessionEvent], batch: int = 1000) -> pb.TrackEventsResponse:
        """Stream behaviour events (in messages of at most `batch`); returns the accepted/rejected counts."""
        requests = (pb.TrackEventsRequest(events=events[i : i + batch]) for i in range(0, len(events), batch))
        response: pb.TrackEventsResponse = self._stub.TrackEvents(
            requests, timeout=self.timeout, metadata=self._metadata
        )
        return response

    def get_session(self, session_id: str) -> dict[str, str | float]:
        """The session's current intent features (raises NOT_FOUND for an unknown or expired session)."""
        response = self._stub.GetSession(
            pb.GetSessionRequest(session_id=session_id), timeout=self.timeout, metadata=self._metadata
        )
        return {k: v.text if v.WhichOneof("value") == "text" else v.number for k, v in response.features.items()}

    def delete_session(self, session_id: str) -> bool:
        """Erase a session's context; False if there was none."""
        response = self._stub.DeleteSession(
            pb.DeleteSessionRequest(session_id=session_id), timeout=self.timeout, metadata=self._metadata
        )
        return response.deleted

    def activate(self, event_id: str) -> None:
        """Start the reward window of a decision made with defer_activation."""
        self._stub.Activate(pb.ActivateRequest(event_id=event_id), timeout=self.timeout, metadata=self._metadata)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> TailorClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
