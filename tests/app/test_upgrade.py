"""Upgrading Tailor keeps what users have: models resume with the flags they were built with, retained
decisions are restored, and changed defaults reach only new decision points (or an explicit change).

Every test starts from state the previous release wrote itself (`tests/fixtures/release-0.1/`)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from vowpalwabbit import pyvw

from server.catalogs import _catalog
from server.state.models import ESTABLISHED
from server.tools.launcher import LearnProcess
from tailor.v1 import decision_service_pb2 as pb

from ..conftest import LAYOUTS, RunningServer, ServeProcess, write_catalog
from ..redis_server import RedisServer

RELEASE_0_1 = Path(__file__).resolve().parents[1] / "fixtures" / "release-0.1"
MODEL_0_1 = "905a30f4"  # the fingerprint 0.1 gave home_layout's flags (-q ca -q sa -b 12)


def previous_release_state(tmp: Path) -> tuple[Path, Path, dict[str, Any]]:
    """A copy of 0.1's catalogs and data directory, its retained decisions moved to the present (as if the
    upgrade happened right after 0.1 stopped), and what 0.1 answered."""
    catalogs, data = tmp / "catalogs", tmp / "data"
    shutil.copytree(RELEASE_0_1 / "catalogs", catalogs)
    shutil.copytree(RELEASE_0_1 / "data", data)
    pending = data / "pending-decisions.jsonl"
    docs = [json.loads(line) for line in pending.read_text().splitlines()]
    shift = time.time() - max(d["created_at"] for d in docs)
    for d in docs:
        d["created_at"] += shift
        d["activated_at"] += shift
    pending.write_text("".join(json.dumps(d) + "\n" for d in docs))
    return catalogs, data, json.loads((RELEASE_0_1 / "answers.json").read_text())


def test_the_previous_releases_model_and_decisions_carry_on_after_an_upgrade(tmp_path: Path) -> None:
    catalogs, data, answers = previous_release_state(tmp_path)
    served = ServeProcess(catalogs, data).wait_serving()
    try:
        fresh = served.client.decide("after-upgrade", "home_layout", context={"device": "mobile"})
        assert fresh.model_version == f"{MODEL_0_1}.1"  # 0.1's snapshot, resumed: same flags, same model

        event_id, action, probability = answers["learned"][1]
        replay = served.client.decide("s1", "home_layout", context={"device": "mobile"}, event_id=event_id)
        assert (replay.action_id, replay.probability) == (action, probability)  # verbatim, as 0.1 answered

        waiting = [e for e, _, _ in answers["pending"]]
        statuses = [r.status for r in served.client.report_rewards([(e, 1.0, f"late-{e}") for e in waiting])]
        assert statuses == [pb.REWARD_STATUS_ACCEPTED] * len(waiting)  # 0.1's open decisions still join
    finally:
        assert served.terminate() == 0
    folders = sorted(p.name for p in (data / "models" / "home_layout").iterdir())
    assert folders == [MODEL_0_1]  # no second model was started
    assert (data / "models" / "home_layout" / MODEL_0_1 / "0000000002.vw").is_file()  # it learned on
    # 0.1's open decisions, rewarded after the upgrade, are in the decision log like any other (0.1 recorded no
    # baseline with them: null), and VW reads them back.
    out = tmp_path / "export.dsjson"
    command = [sys.executable, "-m", "server", "export-logs", "--out", str(out), "--data-dir", str(data)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    docs = [json.loads(line) for line in out.read_text().splitlines()]
    rewarded = [d for d in docs if d["_label_cost"] == -1.0]
    assert len(rewarded) == len(answers["pending"]) and {d["_tailor"]["chosen"] for d in rewarded} == {"carousel"}
    assert all(d["_tailor"]["arm"] == "policy" and d["_tailor"]["baseline"] is None for d in rewarded)
    workspace = pyvw.Workspace("--cb_explore_adf --dsjson --chain_hash --quiet")
    for line in out.read_text().splitlines():
        examples = workspace.parse(line)
        workspace.learn(examples)
        workspace.finish_example(examples)
    workspace.finish()


@pytest.fixture
def new_defaults(monkeypatch: pytest.MonkeyPatch) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Defaults unlike 0.1's flags, whatever the current ones are, so the upgrade rule is really exercised."""
    interactions, ignore_linear = ("ca", "sa", "cca"), ("c",)
    monkeypatch.setattr(_catalog, "DEFAULT_INTERACTIONS", interactions)
    monkeypatch.setattr(_catalog, "DEFAULT_IGNORE_LINEAR", ignore_linear)
    return interactions, ignore_linear


def test_new_defaults_reach_new_decision_points_and_leave_existing_models_alone(
    tmp_path: Path, start_server: Callable[..., RunningServer], new_defaults: tuple[tuple[str, ...], tuple[str, ...]]
) -> None:
    catalogs, data, _ = previous_release_state(tmp_path)
    write_catalog(catalogs, "cart_offer", LAYOUTS)  # a decision point 0.1 never had
    server = start_server(catalogs, data_dir=data)

    existing = server.call(lambda: server.app.models.get("home_layout"))
    assert existing is not None
    assert (existing.fingerprint, existing.seq) == (MODEL_0_1, 1)
    assert (existing.spec.interactions, existing.spec.ignore_linear) == (("ca", "sa"), ())

    new = server.call(lambda: server.app.models.get("cart_offer"))
    assert new is not None
    assert (new.spec.interactions, new.spec.ignore_linear) == new_defaults
    assert new.seq == 0

    # A reload (SIGHUP) of the same catalogs keeps both models as they are.
    assert server.run(server.app.reload_catalogs())
    after = server.call(lambda: (server.app.models.get("home_layout"), server.app.models.get("cart_offer")))
    assert after == (existing, new)


def test_setting_the_keys_is_an_explicit_change_that_starts_a_new_model(tmp_path: Path) -> None:
    catalogs, data, _ = previous_release_state(tmp_path)
    path = catalogs / "home_layout.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["policy"]["learning"].update(interactions=["ca", "sa", "cca"], ignore_linear=["c"])
    path.write_text(yaml.safe_dump(doc))
    served = ServeProcess(catalogs, data).wait_serving()
    try:
        decision = served.client.decide("x", "home_layout", context={"device": "mobile"})
        served.client.report_rewards([(decision.event_id, 1.0, "r")])  # learned, so shutdown snapshots it
        version = decision.model_version
    finally:
        assert served.terminate() == 0
    fingerprint, seq = version.split(".")
    assert fingerprint != MODEL_0_1 and seq == "0"
    args = (data / "models" / "home_layout" / fingerprint / "vw_args.txt").read_text()
    assert "-q ca -q sa --cubic cca --ignore_linear c" in args
    assert (data / "models" / "home_layout" / MODEL_0_1 / "0000000001.vw").is_file()  # the old model is kept


def test_redis_mode_keeps_the_model_the_previous_release_published(
    tmp_path: Path,
    start_server: Callable[..., RunningServer],
    module_redis: RedisServer,
    new_defaults: tuple[tuple[str, ...], tuple[str, ...]],
) -> None:
    catalogs, _, _ = previous_release_state(tmp_path)
    prefix = f"up{uuid.uuid4().hex[:6]}"
    # What 0.1's learner left in Redis: a models-hash entry without `format` or `vw_args`, and the blob.
    client = module_redis.client()
    blob = (RELEASE_0_1 / "data" / "models" / "home_layout" / MODEL_0_1 / "0000000001.vw").read_bytes()
    raw = redis.Redis(port=module_redis.port)
    raw.set(f"{prefix}:{{m}}:blob:home_layout:{MODEL_0_1}:1", blob)
    client.hset(
        f"{prefix}:{{m}}:models", "home_layout", json.dumps({"fingerprint": MODEL_0_1, "seq": 1, "saved_at": 1.0})
    )

    # A replica of this release, whose defaults differ from 0.1's flags, serves the published model...
    replica = start_server(catalogs, redis_url=module_redis.url, redis_prefix=prefix)
    decisions = [replica.client.decide(f"s{i}", "home_layout", context={"device": "mobile"}) for i in range(20)]
    assert {d.model_version for d in decisions} == {f"{MODEL_0_1}.1"}

    # ... and this release's learner resumes it too: it publishes the next version of the same model,
    # now with the command line recorded, and the replica follows.
    learner = LearnProcess(catalogs, module_redis.url, prefix, tmp_path / "learn.log").start()
    try:
        replica.client.report_rewards([(d.event_id, 1.0, f"r{i}") for i, d in enumerate(decisions)])

        def followed() -> bool:
            return replica.client.decide("probe", "home_layout").model_version == f"{MODEL_0_1}.2"

        deadline = time.monotonic() + 15
        while not followed() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert followed()
    finally:
        learner.stop()
    meta = json.loads(client.hget(f"{prefix}:{{m}}:models", "home_layout") or "{}")
    assert (meta["format"], meta["fingerprint"], meta["seq"]) == (1, MODEL_0_1, 2)
    assert "-q ca -q sa -b 12" in meta["vw_args"]
    assert meta["actions"] == {"format": 1, "counts": dict.fromkeys(("grid", "carousel", "editorial"), ESTABLISHED)}
    # The catalog store is new in Redis: the previous release's directory seeded it, one version each (the
    # replica and the learner both applied it), and the resumed model is kept for its flags.
    current = {k: json.loads(v) for k, v in client.hgetall(f"{prefix}:{{m}}:cat:current").items()}
    expected = {p.stem for p in catalogs.glob("*.yaml")}
    assert {k: (v["format"], v["version"], v["origin"]) for k, v in current.items()} == dict.fromkeys(
        expected, (1, 1, "directory")
    )
    assert client.hexists(f"{prefix}:{{m}}:kept", f"home_layout|{MODEL_0_1}")
    client.close()
    raw.close()


@pytest.mark.parametrize("exploration", [{"algorithm": "squarecb"}, None], ids=["gamma unset", "exploration unset"])
def test_an_unset_gamma_scale_keeps_the_models_own(
    tmp_path: Path, start_server: Callable[..., RunningServer], exploration: dict[str, Any] | None
) -> None:
    catalogs = tmp_path / "catalogs"
    catalogs.mkdir()
    write_catalog(catalogs, "home_layout", LAYOUTS, exploration={"algorithm": "squarecb", "gamma_scale": 30})
    first = start_server(catalogs)
    d = first.client.decide("s", "home_layout")
    first.client.report_rewards([(d.event_id, 1.0, "r")])
    assert first.wait_for(lambda: len(first.app.learner or []) == 0)
    first.stop()
    built = d.model_version.split(".")[0]

    policy: dict[str, Any] = {} if exploration is None else {"exploration": exploration}
    write_catalog(catalogs, "home_layout", LAYOUTS, **policy)  # gamma_scale no longer written out
    second = start_server(catalogs)
    assert second.client.decide("t", "home_layout").model_version == f"{built}.1"  # resumed, not restarted
    model = second.call(lambda: second.app.models.get("home_layout"))
    assert model is not None and "--gamma_scale 30.0" in model.spec.vw_args()
