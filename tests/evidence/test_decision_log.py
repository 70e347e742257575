"""The durable decision log (embedded): every learned decision as a DSJSON line that VW reads back and learns
the same model from; ids pseudonymised with the installation's HMAC key; deferred decisions never activated
logged with `_skipLearn`; files rotated and bounded; `tailor export-logs` selects by time and decision point."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from vowpalwabbit import pyvw

from server.state.evidence import FileEvidenceLog, read_line
from tailor.v1 import decision_service_pb2 as pb

from ..conftest import RunningServer, quick_learner, write_catalog
from ..redis_server import RedisServer

ACTIONS: dict[str, dict[str, Any]] = {
    "a": {"style": "grid", "density": 24},
    "b": {"style": "carousel", "density": 6},
    "c": {"style": "ed"},
}


def export(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "server", "export-logs", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def weights(model: Path, tmp: Path) -> dict[str, str]:
    """A VW model's weights (`index:value` lines of its readable dump), whatever options it was trained with."""
    readable = tmp / f"{model.stem}-{time.monotonic_ns()}.txt"
    pyvw.Workspace(f"--quiet -i {model} --readable_model {readable}").finish()
    return dict(line.split(":", 1) for line in readable.read_text().splitlines() if re.match(r"^\d+:", line))


def traffic(server: RunningServer, n: int, rewarded: str = "b") -> tuple[int, list[str]]:
    """n decisions with context; the `rewarded` action gets 1.0, the rest the default when their window closes."""
    hits, sessions = 0, []
    for i in range(n):
        session = f"shopper-{i % 17}@example.com"
        sessions.append(session)
        d = server.client.decide(
            session, "home_layout", context={"device": "mobile" if i % 2 else "desktop", "hour": i % 24}
        )
        if d.action_id == rewarded:
            server.client.report_rewards([(d.event_id, 1.0, f"r{i}")])
            hits += 1
    return hits, sessions


def test_vw_learns_from_the_exported_lines_exactly_what_tailor_learned(
    start_server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    catalogs = tmp_path / "catalogs"
    catalogs.mkdir()
    write_catalog(catalogs, "home_layout", ACTIONS, reward_window_seconds=0.3)
    server = start_server(catalogs)
    hits, sessions = traffic(server, 150)
    learned = ("tailor_learned_examples_total", {"decision_point": "home_layout", "source": "default"})
    assert server.wait_for(lambda: server.metric(*learned) == 150 - hits, timeout=15)
    server.stop()  # snapshots the model it learned
    data = tmp_path / "data"
    out = tmp_path / "decisions.dsjson"
    done = export("--out", str(out), "--data-dir", str(data))
    assert done.returncode == 0, done.stderr
    lines = out.read_text().splitlines()
    assert len(lines) == 150 and "150 decisions" in done.stderr
    decisions = [read_line(line) for line in lines]
    assert sum(d.cost == -1.0 for d in decisions) == hits and {d.decision_point for d in decisions} == {"home_layout"}
    assert all(session not in out.read_text() for session in set(sessions))  # pseudonymised
    assert len({d.session for d in decisions}) == 17  # the same shopper, the same pseudonym
    # VW, from the lines alone, with the model's own flags: the same weights as Tailor's snapshot.
    [folder] = (data / "models" / "home_layout").iterdir()
    snapshot = max(folder.glob("*.vw"))
    vw_args = (folder / "vw_args.txt").read_text().strip()
    replay = pyvw.Workspace(f"{vw_args} --dsjson --chain_hash --quiet")
    for line in lines:
        examples = replay.parse(line)
        replay.learn(examples)
        replay.finish_example(examples)
    replayed = tmp_path / "replayed.vw"
    replay.save(str(replayed))
    replay.finish()
    tailor_weights = weights(snapshot, tmp_path)
    assert len(tailor_weights) > 10 and weights(replayed, tmp_path) == tailor_weights


def test_a_deferred_decision_never_activated_is_logged_to_skip(
    start_server: Callable[..., RunningServer], catalog_dir: Path, tmp_path: Path
) -> None:
    server = start_server(catalog_dir, decision_grace_seconds=0.2)
    write_catalog(catalog_dir, "home_layout", ACTIONS, reward_window_seconds=0.2)
    assert server.run(server.app.reload_catalogs())
    waiting = server.client.decide("s", "home_layout", defer_activation=True)
    shown = server.client.decide("s", "home_layout", defer_activation=True)
    server.client.activate(shown.event_id)
    assert server.wait_for(
        lambda: (
            server.metric(
                "tailor_decision_log_lines_total", {"decision_point": "home_layout", "outcome": "unactivated"}
            )
            == 1
        ),
        timeout=10,
    )
    server.stop()
    out = tmp_path / "out.dsjson"
    assert export("--out", str(out), "--data-dir", str(tmp_path / "data")).returncode == 0
    by_outcome = {json.loads(line)["_tailor"]["outcome"]: json.loads(line) for line in out.read_text().splitlines()}
    assert set(by_outcome) == {"default", "unactivated"}
    assert by_outcome["unactivated"]["_skipLearn"] is True and "_skipLearn" not in by_outcome["default"]
    assert waiting.event_id not in out.read_text()  # event ids are pseudonymised too


def test_in_redis_mode_a_deferred_decision_never_activated_is_logged_to_skip_once(
    start_server: Callable[..., RunningServer], catalog_dir: Path, module_redis: RedisServer, tmp_path: Path
) -> None:
    write_catalog(catalog_dir, "home_layout", ACTIONS, reward_window_seconds=0.2)
    prefix = f"t{uuid.uuid4().hex[:8]}"
    learner = quick_learner(catalog_dir, module_redis.url, prefix)
    try:
        server = start_server(catalog_dir, redis_url=module_redis.url, redis_prefix=prefix, decision_grace_seconds=0.3)
        waiting = server.client.decide("s", "home_layout", defer_activation=True)
        shown = server.client.decide("s", "home_layout", defer_activation=True)
        server.client.activate(shown.event_id)
        lines = ("tailor_decision_log_lines_total", {"decision_point": "home_layout", "outcome": "unactivated"})
        deadline = time.monotonic() + 15
        while learner.learner.registry.get_sample_value(*lines) != 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert learner.learner.registry.get_sample_value(*lines) == 1
        # Its time ran out: like a forgotten decision, it takes no reward and no activation any more.
        [late] = server.client.report_rewards([(waiting.event_id, 1.0, "late")])
        assert late.status == pb.REWARD_STATUS_UNKNOWN_EVENT
        with pytest.raises(grpc.RpcError) as err:
            server.client.activate(waiting.event_id)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        out = tmp_path / "out.dsjson"
        done = export("--out", str(out), "--redis-url", module_redis.url, "--redis-prefix", prefix)
        assert done.returncode == 0, done.stderr
        docs = [json.loads(line) for line in out.read_text().splitlines()]
        assert sorted(doc["_tailor"]["outcome"] for doc in docs) == ["default", "unactivated"]
        assert all(doc.get("_skipLearn", False) == (doc["_tailor"]["outcome"] == "unactivated") for doc in docs)
        learned = ("tailor_learned_examples_total", {"decision_point": "home_layout", "source": "default"})
        assert learner.learner.registry.get_sample_value(*learned) == 1  # only the activated one
    finally:
        learner.stop()


def test_export_selects_by_time_and_decision_point(start_server: Callable[..., RunningServer], tmp_path: Path) -> None:
    catalogs = tmp_path / "catalogs"
    catalogs.mkdir()
    write_catalog(catalogs, "home_layout", ACTIONS, reward_window_seconds=60)
    write_catalog(catalogs, "cart_offer", {"ten_off": {"kind": "discount"}, "none": {}}, reward_window_seconds=60)
    server = start_server(catalogs)
    early = [server.client.decide(f"e{i}", "home_layout") for i in range(3)]
    time.sleep(1.0)
    middle = time.time()
    late = [server.client.decide(f"l{i}", point) for i, point in enumerate(["home_layout", "cart_offer"] * 2)]
    server.client.report_rewards([(d.event_id, 0.5, f"r-{d.event_id}") for d in [*early, *late]])
    server.stop()
    data = str(tmp_path / "data")
    out = tmp_path / "out.dsjson"
    assert export("--out", str(out), "--data-dir", data).returncode == 0
    assert len(out.read_text().splitlines()) == 7
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(middle)) + f".{int(middle % 1 * 1e6):06d}Z"
    assert export("--out", str(out), "--data-dir", data, "--since", stamp).returncode == 0
    assert len(out.read_text().splitlines()) == 4
    assert (
        export("--out", str(out), "--data-dir", data, "--until", stamp, "--decision-point", "home_layout").returncode
        == 0
    )
    assert len(out.read_text().splitlines()) == 3
    assert (
        export("--out", str(out), "--data-dir", data, "--since", "1h", "--decision-point", "cart_offer").returncode == 0
    )
    assert len(out.read_text().splitlines()) == 2
    bad = export("--out", str(out), "--data-dir", data, "--since", "yesterday")
    assert bad.returncode == 2 and "RFC 3339" in bad.stderr
    missing = export("--out", str(out), "--data-dir", str(tmp_path / "nowhere"))
    assert missing.returncode == 1 and "no decision log" in missing.stderr


def test_files_rotate_and_stay_within_their_bounds(tmp_path: Path) -> None:
    log = FileEvidenceLog(tmp_path, max_file_bytes=1000, retention_seconds=3600, max_total_bytes=3500)
    for i in range(100):
        log.write(json.dumps({"i": i, "pad": "x" * 80}))
    log.close()
    files = sorted(tmp_path.glob("decisions-*.dsjson"))
    assert len(files) >= 3 and all(f.stat().st_size <= 1000 + 100 for f in files)
    assert sum(f.stat().st_size for f in files) <= 3500 + 1100  # the open file may overshoot by one
    kept = [json.loads(line)["i"] for f in files for line in f.read_text().splitlines()]
    assert kept == list(range(kept[0], 100))  # the newest are kept, in order


def test_a_full_disk_costs_log_lines_not_learning(start_server: Callable[..., RunningServer], tmp_path: Path) -> None:
    catalogs = tmp_path / "catalogs"
    catalogs.mkdir()
    write_catalog(catalogs, "home_layout", ACTIONS, reward_window_seconds=60)
    server = start_server(catalogs)
    log = server.app.evidence_log
    assert log is not None
    server.call(lambda: log.write("{}"))  # opens today's file
    full = Path("/dev/full").open("w")  # noqa: SIM115 (the log owns it) every write to it fails with ENOSPC

    def fill() -> None:
        assert log._file is not None
        log._file.close()
        log._file = full

    server.call(fill)
    for i in range(20):
        d = server.client.decide(f"s{i}", "home_layout")
        server.client.report_rewards([(d.event_id, 1.0, f"r{i}")])
    learned = ("tailor_learned_examples_total", {"decision_point": "home_layout", "source": "reward"})
    assert server.wait_for(lambda: server.metric(*learned) == 20)  # learning went on
    assert server.metric("tailor_decision_log_errors_total") > 0  # the lost lines are counted
    assert server.client.decide("after", "home_layout").action_id in ACTIONS
    server.stop()  # and a graceful stop still snapshots the model
    assert list((tmp_path / "data" / "models" / "home_layout").rglob("*.vw"))


def logged_record(decision: Any, **fields: Any) -> Any:
    """A decision record as the learner hands it to the log: one decided at a fixed time, activated then, in a
    60 s window on a [0, 2] reward range, unless `fields` say otherwise."""
    from server.state.decision_log import DecisionRecord

    defaults: dict[str, Any] = {
        "session_id": "s1",
        "decision_point": "home_layout",
        "created_at": 1_796_814_000.123,
        "window_seconds": 60,
        "aggregation": "first",
        "reward_range": (0.0, 2.0),
        "default_reward": 0.0,
        "grace_seconds": 600,
        "activated_at": 1_796_814_000.123,
    }
    return DecisionRecord(decision=decision, **(defaults | fields))


def test_canonical_lines_carry_vw_text_parser_numbers_and_nothing_else_changes() -> None:
    from server.state.decision_log import Decision
    from server.state.evidence import Pseudonymizer, canonical, dsjson_line

    record = logged_record(
        Decision("e1", "b", 0.6, (("b", 0.6), ("a", 0.4)), {}, "abc.3"),
        shared="shared |c device=mobile basket:35.5 zero:0 |s events:1.0986123",
        actions=("|a id=a density:24", "|a id=b density:6.46931e-08"),
        chosen=1,
    )
    raw = dsjson_line(record, 1.0, "reward", 1_796_814_031.5, Pseudonymizer(None))
    doc = json.loads(raw)
    assert doc["c"]["s"] == {"events": 1.0986123} and doc["c"]["c"]["zero"] == 0  # the decimals Tailor gave VW
    line = canonical(raw)
    assert canonical(line) == line  # idempotent
    out = json.loads(line)
    # VW's text parser's float32, one step below the nearest float32 to 1.0986123 (1.0986123085021973)
    assert out["c"]["s"] == {"events": 1.0986121892929077}
    assert "zero" not in out["c"]["c"] and out["c"]["c"]["device=mobile"] == 1.0  # it drops zero values
    assert out["c"]["_multi"][1]["a"]["density"] == 6.469309710155358e-08
    assert out["_label_cost"] == -0.5 and out["_label_probability"] == 0.6000000238418579
    assert out["_tailor"].pop("numbers") == "vw"
    for name in ("c", "_label_cost", "_label_probability"):
        out.pop(name), doc.pop(name)
    assert out == doc  # nothing else changes


_ids = st.text(st.characters(codec="utf-8"), min_size=1, max_size=8)
_number = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False) | st.integers(-5, 5)


@settings(max_examples=300, deadline=None)
@given(
    ids=st.lists(_ids, min_size=1, max_size=5, unique=True),
    features=st.dictionaries(_ids, _ids | st.integers(1, 10**6), max_size=4),  # numbers are kept verbatim: "-0" stays
    arm=st.sampled_from(["policy", "apprentice", "holdout"]),
    outcome=st.sampled_from(["reward", "default", "unactivated"]),
    reward=_number,
    rewards=st.lists(st.floats(-1, 1, allow_nan=False), max_size=3),
    baseline=st.booleans(),
    activated=st.booleans(),
    key=st.sampled_from([None, b"k" * 32]),
)
def test_a_line_is_byte_for_byte_what_json_dumps_writes(
    ids: list[str],
    features: dict[str, Any],
    arm: str,
    outcome: str,
    reward: float,
    rewards: list[float],
    baseline: bool,
    activated: bool,
    key: bytes | None,
) -> None:
    """The line is formatted directly (it is written for every decision): it must be exactly the compact, ASCII
    JSON that json.dumps gives for the same document, whatever the ids and features hold."""
    from policies import action_line, encode_features, shared_line
    from server.state.decision_log import Decision
    from server.state.evidence import Pseudonymizer, dsjson_line

    pmf = [1 / len(ids)] * len(ids)
    ranking = tuple(zip(ids, pmf, strict=True))
    decision = Decision(
        "e1", ids[-1], pmf[-1], ranking, {}, "m.1", arm,  # type: ignore[arg-type]
        ids[0] if arm == "apprentice" else "", 0.25 if arm == "apprentice" else 0.0,
    )  # fmt: skip
    record = logged_record(
        decision,
        session_id=ids[0],
        decision_point=ids[-1],
        shared=shared_line(encode_features(sorted(features.items())), encode_features([("n", 1.5)])),
        actions=tuple(action_line(a, features) for a in ids),
        chosen=len(ids) - 1,
        reward_range=(0, 5),
        activated_at=1_796_814_001.5 if activated else None,
        rewards=tuple(rewards),
        baseline=ids[0] if baseline else None,
    )
    line = dsjson_line(record, reward, outcome, 1_796_814_031.5, Pseudonymizer(key))  # type: ignore[arg-type]
    assert json.dumps(json.loads(line), separators=(",", ":")) == line


@pytest.mark.parametrize("space", ["\xa0", "\x85", "\u2028", "\u3000"])
def test_a_value_with_unicode_whitespace_stays_one_feature(space: str) -> None:
    """VW reads tokens between ASCII spaces; a no-break space inside a category is part of its value, in the log
    as in what was learned."""
    from policies import action_line, encode_features, shared_line
    from server.state.decision_log import Decision
    from server.state.evidence import Pseudonymizer, dsjson_line

    record = logged_record(
        Decision("e1", "a", 1.0, (("a", 1.0),), {}, "m.1"),
        shared=shared_line(encode_features([("category", f"home{space}garden"), ("n", 2.0)])),
        actions=(action_line("a", {"style": f"big{space}grid"}),),
        chosen=0,
    )
    doc = json.loads(dsjson_line(record, 1.0, "reward", 1_796_814_031.5, Pseudonymizer(None)))
    assert doc["c"]["c"] == {f"category=home{space}garden": 1, "n": 2}
    assert doc["c"]["_multi"] == [{"a": {"id=a": 1, f"style=big{space}grid": 1}}]
