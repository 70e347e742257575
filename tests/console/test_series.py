"""Where the console's over-time series come from: the learner that sees every decision. Embedded, the server's
learner keeps them and they survive a restart (DATA_DIR/console-series.json, with a format version); in Redis mode
the leading `tailor learn` adds them to Redis after each publish, and every replica's console shows the fleet's."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from server.learning import SERIES_FORMAT, summed
from server.tools.launcher import free_port

from ..conftest import RunningServer, quick_learner, write_catalog
from ..redis_server import RedisServer

OFFERS: dict[str, dict[str, Any]] = {"ten_off": {"pct": 10}, "free_ship": {"kind": "ship"}, "none": {}}


def traffic(server: RunningServer, n: int, prefix: str) -> dict[str, int]:
    chosen: dict[str, int] = {}
    for i in range(n):
        d = server.client.decide(f"{prefix}-{i}", "cart_offer")
        chosen[d.action_id] = chosen.get(d.action_id, 0) + 1
        if d.action_id == "ten_off":
            server.client.report_rewards([(d.event_id, 1.0, f"{prefix}-r{i}")])
    return chosen


def decisions_on_page(port: int) -> dict[str, int]:
    page = httpx.get(f"http://127.0.0.1:{port}/points/cart_offer", timeout=10).text
    rows = re.findall(r'<tr id="action-([^"]+)">\s*<th scope="row">[^<]*</th>\s*<td>(\d+)</td>', page)
    return {action: int(n) for action, n in rows}


def test_embedded_series_are_the_learners_and_survive_a_restart(
    start_server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    catalogs = tmp_path / "catalogs"
    catalogs.mkdir()
    write_catalog(catalogs, "cart_offer", OFFERS, reward_window_seconds=0.2)
    port = free_port()
    server = start_server(catalogs, console_port=port)
    chosen = traffic(server, 60, "a")
    learned = ("tailor_learned_examples_total", {"decision_point": "cart_offer", "source": "default"})
    assert server.wait_for(lambda: server.metric(*learned) == 60 - chosen.get("ten_off", 0), timeout=15)
    assert decisions_on_page(port) == {a: chosen.get(a, 0) for a in OFFERS}
    server.stop()
    saved = json.loads((tmp_path / "data" / "console-series.json").read_text())
    assert saved["format"] == SERIES_FORMAT
    again = start_server(catalogs, console_port=port)
    assert decisions_on_page(port) == {a: chosen.get(a, 0) for a in OFFERS}  # kept across the restart
    assert again.app.series is not None and again.app.series.points["cart_offer"]


def test_a_previous_series_file_of_another_format_starts_empty_and_says_so(
    start_server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    catalogs = tmp_path / "catalogs"
    catalogs.mkdir()
    write_catalog(catalogs, "cart_offer", OFFERS)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "console-series.json").write_text(json.dumps({"format": 99, "points": {}}))
    server = start_server(catalogs)
    assert server.metric("tailor_corrupt_state_total", {"what": "console_series"}) == 1
    assert server.app.series is not None and server.app.series.points == {}


def test_in_redis_mode_every_replica_shows_the_learners_series(
    start_server: Callable[..., RunningServer], module_redis: RedisServer, tmp_path: Path
) -> None:
    catalogs = tmp_path / "catalogs"
    catalogs.mkdir()
    write_catalog(catalogs, "cart_offer", OFFERS, reward_window_seconds=0.2)
    prefix = f"t{uuid.uuid4().hex[:8]}"
    learner = quick_learner(catalogs, module_redis.url, prefix)
    try:
        shared = {"redis_url": module_redis.url, "redis_prefix": prefix, "catalog_poll_seconds": 0.1}
        a = start_server(catalogs, console_port=free_port(), data_dir=tmp_path / "a", **shared)
        b = start_server(catalogs, console_port=free_port(), data_dir=tmp_path / "b", **shared)
        chosen = traffic(a, 30, "a")
        for action, n in traffic(b, 30, "b").items():
            chosen[action] = chosen.get(action, 0) + n
        want = {action: chosen.get(action, 0) for action in OFFERS}
        assert a.app.console_port is not None and b.app.console_port is not None
        deadline = time.monotonic() + 20
        while decisions_on_page(a.app.console_port) != want and time.monotonic() < deadline:
            time.sleep(0.2)
        assert decisions_on_page(a.app.console_port) == want  # both replicas' decisions, on either console
        assert decisions_on_page(b.app.console_port) == want
        found = a.run(a.app.console_series(["cart_offer"], time.time() - 3600, time.time()))
        assert found is not None
        total = summed(bucket for _, bucket in found.window("cart_offer", time.time() - 3600, time.time()))
        assert total.values["live"][0] == 60 and total.rewards.get("ten_off", 0) == pytest.approx(want["ten_off"])
    finally:
        learner.stop()


def test_minutes_older_than_a_day_fold_into_hours_and_a_week_is_kept() -> None:
    from server.learning import ActionSeries

    series = ActionSeries()
    now = 1_796_814_000.0  # a whole hour
    three_days_ago = now - 3 * 86400
    for minute in range(5):  # five minutes of one hour, three days ago
        series.add("cart_offer", "ten_off", 1.0, 0.5, 3, True, three_days_ago + 60 * minute)
    series.add("cart_offer", "none", 0.0, 0.5, 3, False, now - 60)  # a recent minute stays a minute
    series.add("cart_offer", "none", 0.0, 0.5, 3, False, now - 8 * 86400)  # past the week: dropped
    series.prune(now)
    buckets = series.points["cart_offer"]
    assert sorted(buckets) == [int(three_days_ago // 60), int((now - 60) // 60)]
    folded = buckets[int(three_days_ago // 60)]
    assert folded.decisions == {"ten_off": 5} and folded.values["live"] == [5.0, 5.0, 5.0]
    assert [m for m, _ in series.window("cart_offer", now - 4 * 86400, now)] == sorted(buckets)
    restored = ActionSeries()
    restored.load_doc(series.to_doc())
    assert restored.points == series.points
