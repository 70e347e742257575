"""An action added to a trained model's catalog gets the floor probability until the model has learned
it `until_learned` times; the counts survive a restart; request-supplied actions are never floored."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from server.state.models import ESTABLISHED

from ..conftest import RunningServer, write_catalog

FLOOR = {"probability": 0.2, "until_learned": 3}
TWO = {"grid": {"style": "grid"}, "carousel": {"style": "carousel"}}
THREE = {**TWO, "editorial": {"style": "editorial"}}


def train_towards_grid(server: RunningServer, n: int = 150) -> None:
    for i in range(n):
        d = server.client.decide(f"train-{i}", "home_layout")
        server.client.report_rewards([(d.event_id, 1.0 if d.action_id == "grid" else 0.0, "r")])
    assert server.wait_for(lambda: server.app.learner is not None and len(server.app.learner) == 0)


def probability(server: RunningServer, action: str, session: str) -> float:
    ranking = server.client.decide(session, "home_layout").ranking
    return next(r.probability for r in ranking if r.action_id == action)


def test_a_new_catalog_action_is_explored_until_the_model_has_learned_it(
    tmp_path: Path, start_server: Callable[..., RunningServer]
) -> None:
    catalogs = tmp_path / "catalogs"
    catalogs.mkdir()
    write_catalog(catalogs, "home_layout", TWO, new_action_floor=FLOOR)
    server = start_server(catalogs)
    train_towards_grid(server)
    assert server.metric("tailor_actions_under_floor", {"decision_point": "home_layout"}) == 0  # a model's own

    write_catalog(catalogs, "home_layout", THREE, new_action_floor=FLOOR)
    assert server.run(server.app.reload_catalogs())
    assert server.metric("tailor_actions_under_floor", {"decision_point": "home_layout"}) == 1
    floored = [probability(server, "editorial", f"new-{i}") for i in range(5)]
    assert min(floored) >= 0.2 - 1e-9  # its VW score alone would give it far less
    assert server.metric("tailor_decisions_floored_total", {"decision_point": "home_layout"}) == 5

    for i in range(3):  # the model learns three decisions that chose it
        d = server.client.decide(f"learn-{i}", "home_layout", candidate_action_ids=["editorial"])
        server.client.report_rewards([(d.event_id, 0.0, "r")])
    assert server.wait_for(lambda: not server.app.models.get("home_layout").actions.under_floor)  # type: ignore[union-attr]
    assert server.metric("tailor_actions_under_floor", {"decision_point": "home_layout"}) == 0
    before = server.metric("tailor_decisions_floored_total", {"decision_point": "home_layout"})
    later = [probability(server, "editorial", f"later-{i}") for i in range(5)]
    assert server.metric("tailor_decisions_floored_total", {"decision_point": "home_layout"}) == before
    assert max(later) < 0.2  # learned as a loser, it now gets what the model gives it


def test_the_counts_travel_with_the_snapshot(tmp_path: Path, start_server: Callable[..., RunningServer]) -> None:
    catalogs = tmp_path / "catalogs"
    catalogs.mkdir()
    write_catalog(catalogs, "home_layout", TWO, new_action_floor=FLOOR)
    first = start_server(catalogs)
    train_towards_grid(first, 30)
    write_catalog(catalogs, "home_layout", THREE, new_action_floor=FLOOR)
    assert first.run(first.app.reload_catalogs())
    d = first.client.decide("once", "home_layout", candidate_action_ids=["editorial"])
    first.client.report_rewards([(d.event_id, 0.0, "r")])
    assert first.wait_for(lambda: len(first.app.learner or []) == 0)
    first.stop()  # graceful: snapshots the model with its counts

    [doc_path] = (tmp_path / "data" / "models" / "home_layout").glob("*/0000000001.json")
    manifest = json.loads(doc_path.read_text())  # the snapshot's manifest carries the learned-actions document
    assert manifest["actions"] == {
        "format": 1,
        "counts": {"grid": ESTABLISHED, "carousel": ESTABLISHED, "editorial": 1},
    }

    second = start_server(catalogs)
    model = second.call(lambda: second.app.models.get("home_layout"))
    assert model is not None and model.actions.under_floor == {"editorial"}
    assert model.actions.counts["editorial"] == 1


def test_request_supplied_actions_are_never_floored(tmp_path: Path, start_server: Callable[..., RunningServer]) -> None:
    catalogs = tmp_path / "catalogs"
    catalogs.mkdir()
    write_catalog(catalogs, "home_layout", TWO, new_action_floor=FLOOR)
    server = start_server(catalogs)
    write_catalog(catalogs, "home_layout", THREE, new_action_floor=FLOOR)
    assert server.run(server.app.reload_catalogs())
    for i in range(5):
        server.client.decide(f"s{i}", "home_layout", actions={"p1": {"price": 10}, "editorial": {"style": "x"}})
    assert server.metric("tailor_decisions_floored_total", {"decision_point": "home_layout"}) == 0


def test_raising_the_threshold_never_floors_a_models_own_actions(
    tmp_path: Path, start_server: Callable[..., RunningServer]
) -> None:
    catalogs = tmp_path / "catalogs"
    catalogs.mkdir()
    write_catalog(catalogs, "home_layout", TWO, new_action_floor=FLOOR)
    server = start_server(catalogs)
    write_catalog(catalogs, "home_layout", THREE, new_action_floor={"probability": 0.2, "until_learned": 500})
    assert server.run(server.app.reload_catalogs())
    assert server.metric("tailor_actions_under_floor", {"decision_point": "home_layout"}) == 1  # editorial only
