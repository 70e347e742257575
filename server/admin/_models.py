"""Model export, import and reset: applied to the served model in embedded mode (`LocalModels`), sent as
commands to the learner that owns the model in Redis mode (`SharedModels`).

In Redis mode a replica never writes a model: the learner would overwrite it with its next publish a
second later. The replica checks an import against the decision point's learning flags (so a wrong file
is refused at once), queues the command on the control stream, and waits for the leading learner to apply
it and publish the new version (with the audit event, in the same script). A command that no learner
took before its deadline is never applied (the learner skips expired ones), and the caller hears
UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol

from policies import VWPolicy
from server.core import FailedPrecondition, NotFound, Unavailable
from server.state.catalogs import CatalogStore
from server.state.models import (
    COMMAND_GRACE_SECONDS,
    ModelRegistry,
    RedisModelStore,
    ServedModel,
    policy_bytes,
    policy_from_bytes,
)


@dataclass(frozen=True, slots=True)
class ExportedModel:
    version: str
    vw_args: str
    data: bytes


class ModelAdmin(Protocol):
    async def export(self, decision_point: str) -> ExportedModel: ...

    async def import_(self, decision_point: str, data: bytes, actor: str, within: float | None = None) -> str:
        """Serve the model in `data` as the decision point's next version; that version. `within`: the seconds
        the caller still waits (its gRPC deadline), so a change is never applied after it gave up."""
        ...

    async def reset(self, decision_point: str, actor: str, within: float | None = None) -> str:
        """Start the decision point's model over (same flags) as its next version; that version."""
        ...


def _served(models: ModelRegistry, decision_point: str) -> ServedModel:
    model = models.get(decision_point)
    if model is None:
        raise NotFound(f"unknown decision point {decision_point!r}; known: {sorted(m.decision_point for m in models)}")
    return model


def _load(model: ServedModel, data: bytes) -> VWPolicy:
    try:
        return policy_from_bytes(model.spec, data)
    except Exception:
        raise FailedPrecondition(
            f"the data is not a VW model of {model.decision_point}'s learning flags ({model.spec.vw_args()}): "
            "export it from a decision point with the same flags"
        ) from None


class LocalModels:
    """Embedded mode: the served model is the learned one; a change is snapshotted at once."""

    def __init__(self, models: ModelRegistry, store: CatalogStore) -> None:
        self.models = models
        self.store = store

    async def export(self, decision_point: str) -> ExportedModel:
        model = _served(self.models, decision_point)
        return ExportedModel(model.version, model.spec.vw_args(), policy_bytes(model.policy))

    async def import_(self, decision_point: str, data: bytes, actor: str, within: float | None = None) -> str:
        model = _served(self.models, decision_point)
        served = self.models.replace_policy(decision_point, _load(model, data))
        await self.store.note(
            decision_point, actor, "import_model", f"model {served.version} imported ({len(data)} bytes)"
        )
        return served.version

    async def reset(self, decision_point: str, actor: str, within: float | None = None) -> str:
        model = _served(self.models, decision_point)
        served = self.models.replace_policy(decision_point, VWPolicy(model.spec))
        await self.store.note(
            decision_point, actor, "reset_model", f"model reset: {served.version} learns from scratch"
        )
        return served.version


class SharedModels:
    """Redis mode: commands to the leading learner, which applies them and publishes the result."""

    def __init__(self, models: ModelRegistry, store: RedisModelStore, timeout_seconds: float = 10.0) -> None:
        self.models = models
        self.store = store
        self.timeout_seconds = timeout_seconds

    async def export(self, decision_point: str) -> ExportedModel:
        model = _served(self.models, decision_point)
        published = (await self.store.published()).get(decision_point)
        if published is not None and published.fingerprint == model.fingerprint:
            blob = await self.store.blob(published)
            if blob is not None:
                return ExportedModel(published.version, model.spec.vw_args(), blob)
        return ExportedModel(model.version, model.spec.vw_args(), policy_bytes(model.policy))  # nothing learned yet

    async def import_(self, decision_point: str, data: bytes, actor: str, within: float | None = None) -> str:
        model = _served(self.models, decision_point)
        (await asyncio.to_thread(_load, model, data)).close()  # a wrong file is refused here, not by the learner
        return await self._run(decision_point, "import_model", actor, data, within)

    async def reset(self, decision_point: str, actor: str, within: float | None = None) -> str:
        _served(self.models, decision_point)
        return await self._run(decision_point, "reset_model", actor, b"", within)

    async def _run(self, decision_point: str, action: str, actor: str, data: bytes, within: float | None) -> str:
        timeout = self.timeout_seconds
        if within is not None:  # the learner must not apply it after the caller gave up
            timeout = min(timeout, within - COMMAND_GRACE_SECONDS - 0.5)
            if timeout <= 0:
                raise Unavailable(
                    f"the call's deadline leaves no time for the learner: allow {COMMAND_GRACE_SECONDS + 1:g} s or more"
                )
        result = await self.store.run_command(decision_point, action, actor, data, timeout)
        if result is None:
            raise Unavailable(
                f"no learner applied the command within {timeout:g} s, and it will not be: is a `tailor learn` "
                "leading (tailor_learner_leader)? Retry once one is"
            )
        if "error" in result:
            raise FailedPrecondition(str(result["error"]))
        return str(result["version"])
