"""The service side: a real ``tailor serve`` subprocess, every decision through Decide, every reward
through one long-lived ReportRewards stream, exactly as a gateway would drive it.

Besides the mean reward it collects what would explain a parity gap: how each reward was joined (a
LATE reward is learned as the default 0 instead of 1), how many decisions the learner actually learned,
learn and RPC errors, whether the served model's fingerprint matches the reference's VW flags, and how
the process exited on SIGTERM.
"""

from __future__ import annotations

import queue
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from prometheus_client.parser import text_string_to_metric_families

from policies import Exploration, LearningSpec
from server.tools.launcher import ServeProcess
from tailor import TailorClient
from tailor.v1 import decision_service_pb2 as pb
from tailor.v1 import decision_service_pb2_grpc as pb_grpc

from ._problem import ACTION_IDS, DECISION_POINT, Round, event_id, write_catalog

PROJECT_ROOT = Path(__file__).resolve().parents[2]
_INDEX = {a: i for i, a in enumerate(ACTION_IDS)}

Progress = Callable[[int, int, float], None]
"""Called with (rounds done, rounds in all, mean reward so far) after each pass over the data."""


@dataclass(slots=True)
class ServiceRun:
    """What one run through the service produced, and the evidence needed to trust or explain it."""

    mean_reward: float
    choices: list[int]
    decisions: int
    seconds: float
    reward_statuses: dict[str, int]
    learned: dict[str, float]
    learn_errors: float
    rpc_errors: float
    fingerprint_matches: bool
    exit_code: int
    log_problems: list[str] = field(default_factory=list)

    def statuses_line(self) -> str:
        """Reward join statuses, short: ``ACCEPTED 5391`` (anything else would mean lost learning)."""
        return ", ".join(f"{s.removeprefix('REWARD_STATUS_')} {n}" for s, n in sorted(self.reward_statuses.items()))


@dataclass(slots=True)
class _Metrics:
    learned: dict[str, float]
    learn_errors: float
    rpc_errors: float


def _serve(workdir: Path, exploration: Exploration) -> ServeProcess:
    """A ``tailor serve`` on fresh catalog and data directories for one run (started on entry)."""
    catalogs = workdir / "catalogs"
    catalogs.mkdir()
    write_catalog(catalogs, exploration)
    return ServeProcess(catalogs, workdir / "data", log=workdir / "serve.log")


def _scrape(server: ServeProcess) -> _Metrics:
    """The learner and error counters from /metrics (the service's own account of what it learned)."""
    learned: dict[str, float] = {}
    learn_errors = rpc_errors = 0.0
    for family in text_string_to_metric_families(server.metrics()):
        for sample in family.samples:
            if sample.name == "tailor_learned_examples_total":
                learned[sample.labels["source"]] = learned.get(sample.labels["source"], 0.0) + sample.value
            elif sample.name == "tailor_learn_errors_total":
                learn_errors += sample.value
            elif sample.name == "tailor_rpc_errors_total":
                rpc_errors += sample.value
    return _Metrics(learned, learn_errors, rpc_errors)


class RewardStream:
    """One ReportRewards bidi stream; each reward is sent as its own message and its result awaited.

    Awaiting the result before the next Decide keeps the client strictly alternating decide/reward, the
    same order the reference learns in, so any lag left is the service's own (its learner queue).
    """

    def __init__(self, stub: pb_grpc.DecisionServiceStub) -> None:
        self._requests: queue.Queue[pb.ReportRewardsRequest | None] = queue.Queue()
        self._responses = iter(stub.ReportRewards(iter(self._requests.get, None)))

    def report(self, event_id: str, value: float) -> str:
        """Report one reward (deduplicated by a reward id derived from the event id); returns its status name."""
        reward = pb.Reward(event_id=event_id, value=value, reward_id=f"reward-{event_id}")
        self._requests.put(pb.ReportRewardsRequest(rewards=[reward]))
        (result,) = next(self._responses).results
        return pb.RewardStatus.Name(result.status)

    def close(self) -> None:
        """Half-close the stream and drain it, so the server sees a clean end rather than a cancel."""
        self._requests.put(None)
        for _ in self._responses:
            pass


def _play(
    client: TailorClient, rewards: RewardStream, rounds: Sequence[Round], seed: int, progress: Progress, per_pass: int
) -> tuple[list[int], float, Counter[str], set[str]]:
    """Drive every round through Decide and ReportRewards; returns choices, total reward, statuses, versions."""
    choices: list[int] = []
    total = 0.0
    statuses: Counter[str] = Counter()
    versions: set[str] = set()
    for i, r in enumerate(rounds):
        # A session per round: no session context may leak from one round into the next one's features.
        decision = client.decide(
            f"digits-{seed}-{i}", DECISION_POINT, context=dict(r.context), event_id=event_id(seed, i)
        )
        choices.append(_INDEX[decision.action_id])
        reward = r.reward(choices[-1])
        total += reward
        statuses[rewards.report(decision.event_id, reward)] += 1
        versions.add(decision.model_version)
        if (i + 1) % per_pass == 0:
            progress(i + 1, len(rounds), total / (i + 1))
    return choices, total, statuses, versions


def _wait_learned(server: ServeProcess, expected: int, timeout: float = 10.0) -> _Metrics:
    """Scrape until the learner has caught up with every decision (or the timeout says it never will)."""
    deadline = time.monotonic() + timeout
    metrics = _scrape(server)
    while sum(metrics.learned.values()) < expected and time.monotonic() < deadline:
        time.sleep(0.1)
        metrics = _scrape(server)
    return metrics


def run_service(
    exploration: Exploration, rounds: Sequence[Round], seed: int, progress: Progress, per_pass: int
) -> ServiceRun:
    """Play `rounds` through a fresh ``tailor serve`` and account for every decision it learned."""
    fingerprint = LearningSpec(exploration=exploration).fingerprint()
    with tempfile.TemporaryDirectory(prefix="tailor-digits-") as tmp:
        server = _serve(Path(tmp), exploration)
        with server, grpc.insecure_channel(server.target) as channel:
            client = TailorClient("", channel=channel, timeout=10.0)
            rewards = RewardStream(pb_grpc.DecisionServiceStub(channel))
            started = time.perf_counter()
            try:
                choices, total, statuses, versions = _play(client, rewards, rounds, seed, progress, per_pass)
            except grpc.RpcError as err:
                raise RuntimeError(f"the service failed mid-run: {err}\n{server.log_tail()}") from err
            seconds = time.perf_counter() - started
            rewards.close()
            metrics = _wait_learned(server, len(rounds))
        # Stopped by now: the exit code and the whole log (shutdown included) are known.
        return ServiceRun(
            mean_reward=total / len(rounds),
            choices=choices,
            decisions=len(rounds),
            seconds=seconds,
            reward_statuses=dict(statuses),
            learned=metrics.learned,
            learn_errors=metrics.learn_errors,
            rpc_errors=metrics.rpc_errors,
            # model_version is "<fingerprint>.<seq>", the fingerprint a hash of the served VW flags.
            fingerprint_matches=all(v.split(".")[0] == fingerprint for v in versions),
            exit_code=server.exit_code if server.exit_code is not None else -1,
            log_problems=server.log_problems(),
        )
