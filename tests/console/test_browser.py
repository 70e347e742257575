"""The console end to end in a real browser: headless chromium against a real server with API keys, under
traffic. Sign-in and roles, the charts filling, the editor (inline errors, diff preview, save, a scheduled
offer), pause from the decision point page, rollback from the history, the audit log and the session inspector;
after each change, Decide is asked whether it now serves (or no longer serves) the action."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from selenium.common.exceptions import NoSuchElementException, WebDriverException
from selenium.webdriver import Chrome
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.wait import WebDriverWait

from server.tools.launcher import free_port
from tailor import TailorClient
from tailor.client import catalog_dict
from tailor.v1 import decision_service_pb2 as pb

from ..api import code_of
from ..api.test_keys import write_keys
from ..conftest import RunningServer, write_catalog
from ..deployments import eventually
from .conftest import screenshot

POINT = "spring_promo"
OFFERS = {
    "free_shipping": {"discount": 0.0, "shipping": 1},
    "ten_off": {"discount": 0.1, "shipping": 0},
    "bundle": {"discount": 0.15, "shipping": 0},
    "gift": {"discount": 0.05, "shipping": 0},
}
KEYS = {"storefront": ["decide"], "ops": ["admin"], "dash": ["observe"], "support": ["session"]}


def key_of(name: str) -> str:
    return f"key-of-{name}"  # write_keys' default secret


@dataclass
class Console:
    server: RunningServer
    url: str
    shop: TailorClient  # the storefront's key: Decide, ReportRewards, TrackEvents

    def decide(self, session_id: str, candidates: tuple[str, ...] = ()) -> pb.DecideResponse:
        return self.shop.decide(session_id, POINT, candidate_action_ids=candidates)

    def traffic(self, decisions: int, tag: str) -> dict[str, int]:
        """Decisions, each rewarded at once, inside its short window however slow the machine (free_shipping
        converts best); the actions chosen, counted."""
        chosen: dict[str, int] = {}
        for i in range(decisions):
            response = self.decide(f"{tag}-{i}")
            chosen[response.action_id] = chosen.get(response.action_id, 0) + 1
            value = 1.0 if response.action_id == "free_shipping" else 0.2
            self.shop.report_rewards([(response.event_id, value, f"r-{tag}-{i}")])
        return chosen

    def learned(self) -> int:
        """Decisions the console's series holds for the decision point (read on the server's loop)."""

        def count() -> int:
            series = self.server.app.series
            buckets = series.points.get(POINT, {}) if series is not None else {}
            return sum(sum(b.decisions.values()) for b in buckets.values())

        return self.server.call(count)


@pytest.fixture
def console(start_server: Callable[..., RunningServer], tmp_path: Path, browser: Chrome) -> Console:
    """A server with API keys, one decision point of four offers (rewards joined within 0.3 s) and its console;
    the browser's cookies cleared (each test signs in itself)."""
    catalogs = tmp_path / "catalogs"
    catalogs.mkdir()
    write_catalog(catalogs, POINT, OFFERS, reward_window_seconds=0.3)
    keys = tmp_path / "keys.yaml"
    write_keys(keys, KEYS)
    server = start_server(catalogs, api_keys=keys, console_port=free_port())
    assert server.app.console_port
    browser.delete_all_cookies()
    shop = TailorClient("", channel=server.channel, api_key=key_of("storefront"))
    return Console(server, f"http://127.0.0.1:{server.app.console_port}", shop)


# --- the browser's side ------------------------------------------------------------------------------------


def wait(browser: Chrome, css: str, timeout: float = 10) -> WebElement:
    element: WebElement = WebDriverWait(browser, timeout).until(ec.presence_of_element_located((By.CSS_SELECTOR, css)))
    return element


def field(browser: Chrome, element_id: str) -> WebElement:
    return browser.find_element(By.ID, element_id)


def fill(browser: Chrome, values: dict[str, str]) -> None:
    for element_id, value in values.items():
        element = field(browser, element_id)
        element.clear()
        if value:
            element.send_keys(value)


def submit(browser: Chrome, button_id: str, then: str) -> WebElement:
    """Click a submit button and wait for the next page (the old page gone, `then` present)."""
    old = browser.find_element(By.TAG_NAME, "html")
    field(browser, button_id).click()

    def gone(_: Chrome) -> bool:
        try:
            old.is_enabled()
        except WebDriverException:  # stale, or (chromedriver, mid-navigation) "does not belong to the document"
            return True
        return False

    WebDriverWait(browser, 10).until(gone)
    return wait(browser, then)


def sign_in(browser: Chrome, console: Console, key: str, path: str = "/") -> None:
    browser.delete_all_cookies()
    browser.get(console.url + path)
    assert "/signin" in browser.current_url  # not signed in: sent to sign in first
    fill(browser, {"key": key})
    submit(browser, "signin", "main h1")
    assert "/signin" not in browser.current_url, text(browser, "main")


def text(browser: Chrome, css: str) -> str:
    return str(browser.find_element(By.CSS_SELECTOR, css).text)


def exists(browser: Chrome, css: str) -> bool:
    try:
        browser.find_element(By.CSS_SELECTOR, css)
    except NoSuchElementException:
        return False
    return True


def action_rows(browser: Chrome) -> dict[str, list[str]]:
    """The decision point page's per-action table: action -> its cells (decisions, share, mean, schedule, state)."""
    rows = {}
    for row in browser.find_elements(By.CSS_SELECTOR, "#actions tbody tr"):
        action = row.find_element(By.TAG_NAME, "th").text
        rows[action] = [cell.text for cell in row.find_elements(By.TAG_NAME, "td")]
    return rows


def rfc3339(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- the flow ----------------------------------------------------------------------------------------------


def test_sign_in_with_keys_and_roles(browser: Chrome, console: Console) -> None:
    """A wrong key is refused on the page; the observe key sees every page without Save, Pause or Roll back; the
    admin key sees them."""
    browser.get(console.url + "/")
    assert browser.current_url.endswith("/signin?next=/")
    fill(browser, {"key": "not-a-key"})
    error = submit(browser, "signin", "#signin-error")
    assert error.text == "Unknown key."
    assert error.get_attribute("role") == "alert"
    assert not exists(browser, "header form")  # still signed out: no Sign out button

    sign_in(browser, console, key_of("dash"))
    assert "dash (observe)" in text(browser, "header .who")
    assert browser.find_element(By.LINK_TEXT, POINT)
    assert not exists(browser, "header a[href='/sessions']")  # observe is not the session role
    browser.get(f"{console.url}/points/{POINT}")
    assert set(action_rows(browser)) == set(OFFERS)
    assert all(cells[-1] == "live" for cells in action_rows(browser).values())
    assert not browser.find_elements(By.CSS_SELECTOR, "#actions button")  # no Pause
    browser.get(f"{console.url}/points/{POINT}/edit")
    assert not exists(browser, "#preview-button") and not exists(browser, "#save-button")  # reading only
    assert "changing it needs the admin role" in text(browser, "main form .note")
    browser.get(f"{console.url}/points/{POINT}/history")
    assert exists(browser, "#version-1") and not exists(browser, "main button")  # no Roll back (only one version too)
    browser.get(console.url + "/sessions")
    assert "This needs the session role" in text(browser, "main [role=alert]")

    sign_in(browser, console, key_of("ops"))
    assert "ops (admin)" in text(browser, "header .who")
    browser.get(f"{console.url}/points/{POINT}")
    assert {b.get_attribute("id") for b in browser.find_elements(By.CSS_SELECTOR, "#actions button")} == {
        f"pause-{a}" for a in OFFERS
    }


def test_charts_fill_under_traffic(browser: Chrome, console: Console) -> None:
    """After decisions and rewards are learned, the overview counts them and the decision point page draws the
    traffic share and the policies' value, and its table has every chosen action's decisions."""
    sign_in(browser, console, key_of("ops"))
    browser.get(f"{console.url}/points/{POINT}")
    assert "no decisions learned in this window yet" in text(browser, "main")
    assert not exists(browser, "svg.chart")

    chosen = console.traffic(80, "warmup")
    assert eventually(lambda: console.learned() >= 80), console.learned()  # each joined once its window closes

    browser.get(console.url + "/")
    row = browser.find_element(By.XPATH, f"//tbody/tr[th/a[text()='{POINT}']]")
    cells = [c.text for c in row.find_elements(By.TAG_NAME, "td")]
    assert cells[1] == "80"  # learned (24 h)
    assert float(cells[2]) > 0  # mean reward
    assert "[" in cells[3]  # the live policy's value, with its interval
    screenshot(browser, "overview")

    browser.get(f"{console.url}/points/{POINT}")
    share = browser.find_element(By.CSS_SELECTOR, "svg.chart[aria-label^='Traffic share by action']")
    polygons = share.find_elements(By.TAG_NAME, "polygon")
    assert len(polygons) == len(chosen)  # one band per action that was chosen
    assert browser.find_element(By.CSS_SELECTOR, "svg.chart[aria-label^='Mean reward']")
    rows = action_rows(browser)
    assert {a: int(cells[0]) for a, cells in rows.items() if int(cells[0])} == chosen
    assert sum(int(cells[0]) for cells in rows.values()) == 80
    means = {a: float(cells[2]) for a, cells in rows.items() if int(cells[0])}
    assert means == {a: 1.0 if a == "free_shipping" else 0.2 for a in chosen}
    screenshot(browser, "point")


def test_editor_inline_errors_preview_and_save(browser: Chrome, console: Console) -> None:
    """Invalid values are shown next to their rows; once fixed, Preview shows the diff and Save saves a version."""
    sign_in(browser, console, key_of("ops"), f"/points/{POINT}/edit")
    assert text(browser, "h1") == f"Edit {POINT}"
    fill(
        browser,
        {
            "policy.holdout_share": "0.9",
            "a1.active_from": "2031-01-02T00:00:00Z",
            "a1.active_until": "2031-01-01T00:00:00Z",
        },
    )
    submit(browser, "preview-button", "#errors")
    assert "holdout_share" in text(browser, "#row-policy #error-policy")
    assert "ten_off" in text(browser, "#row-a1 legend")
    assert "active_from" in text(browser, "#row-a1 #error-a1")
    assert not exists(browser, "#error-a0") and not exists(browser, "#error-new")
    assert not exists(browser, "#preview") and not exists(browser, "#save-button")
    # what was typed is kept, to be fixed
    assert field(browser, "policy.holdout_share").get_attribute("value") == "0.9"
    assert field(browser, "a1.active_until").get_attribute("value") == "2031-01-01T00:00:00Z"
    screenshot(browser, "editor-error")

    fill(browser, {"policy.holdout_share": "0.1", "a1.active_until": "2031-02-01T00:00:00Z"})
    diff = submit(browser, "preview-button", "#preview pre.diff").text
    assert not exists(browser, "#errors")
    assert "holdout_share" in diff and "0.1" in diff
    assert "2031-01-02" in diff and "2031-02-01" in diff
    assert console.server.app.service.catalogs[POINT].policy.holdout_share == 0  # a preview changes nothing
    screenshot(browser, "diff-preview")

    message = submit(browser, "save-button", "#message")
    assert browser.current_url.split("?")[0].endswith(f"/points/{POINT}")
    assert message.text == "saved as version 2"
    catalog = console.server.app.service.catalogs[POINT]
    assert catalog.policy.holdout_share == pytest.approx(0.1)
    assert "from 2031-01-02" in action_rows(browser)["ten_off"][3]


def test_a_scheduled_new_offer_is_served(browser: Chrome, console: Console) -> None:
    """A new action from the editor's New action row, active from an hour ago until an hour from now, is
    served once saved."""
    now = datetime.now(UTC)
    new = "spring_gift"
    assert code_of(lambda: console.decide("s-new", (new,))) == grpc.StatusCode.INVALID_ARGUMENT
    sign_in(browser, console, key_of("ops"), f"/points/{POINT}/edit")
    fill(
        browser,
        {
            "new.id": new,
            "new.active_from": rfc3339(now - timedelta(hours=1)),
            "new.active_until": rfc3339(now + timedelta(hours=1)),
            "new.features": "discount: 0.2\nshipping: 1",
            "new.payload": "template: spring_gift_v1",
        },
    )
    diff = submit(browser, "preview-button", "#preview pre.diff").text
    assert new in diff
    message = submit(browser, "save-button", "#message")
    assert message.text == "saved as version 2"
    assert new in action_rows(browser)
    assert action_rows(browser)[new][3].startswith("from ")

    response = console.decide("s-new", (new,))
    assert response.action_id == new
    assert response.payload["template"] == "spring_gift_v1"


def test_pause_then_roll_back_from_history(browser: Chrome, console: Console) -> None:
    """Pause an action on the decision point page: Decide stops choosing it. Roll back to the version before
    from the history (its diff first): it is served again. The audit log has both, by the key's name."""
    console.traffic(20, "before")
    sign_in(browser, console, key_of("ops"), f"/points/{POINT}")
    message = submit(browser, "pause-ten_off", "#message")
    assert message.text == "ten_off paused: version 2"
    assert action_rows(browser)["ten_off"][-1].startswith("paused")
    assert exists(browser, "#resume-ten_off")

    chosen = console.traffic(50, "paused")
    assert "ten_off" not in chosen and sum(chosen.values()) == 50
    assert code_of(lambda: console.decide("s-paused", ("ten_off",))) == grpc.StatusCode.FAILED_PRECONDITION

    ops = TailorClient("", channel=console.server.channel, api_key=key_of("ops"))
    before = catalog_dict(ops.get_decision_point(POINT, 1).catalog)
    assert all(not a.get("paused") for a in before["actions"]), "pausing changed version 1 in the history"

    browser.find_element(By.LINK_TEXT, "Version history").click()
    wait(browser, "#version-2")
    assert "(current)" in text(browser, "#v2")
    assert not exists(browser, "#rollback-2")  # the current version has nothing to roll back to
    screenshot(browser, "history")
    submit(browser, "rollback-1", "#rollback-diff")
    assert text(browser, "h1") == f"Roll back {POINT} to version 1"
    assert "paused" in text(browser, "#rollback-diff")
    assert console.server.app.service.catalogs[POINT].windows is not None  # still paused until confirmed
    screenshot(browser, "rollback-preview")
    message = submit(browser, "confirm-rollback", "#message")
    assert message.text == "rolled back to version 1: now version 3"
    assert action_rows(browser)["ten_off"][-1].startswith("live")

    assert console.decide("s-back", ("ten_off",)).action_id == "ten_off"
    browser.find_element(By.LINK_TEXT, "Audit log").click()
    rows = wait(browser, "tbody").find_elements(By.TAG_NAME, "tr")
    events = [[c.text for c in r.find_elements(By.TAG_NAME, "td")] for r in rows]
    assert [(e[1], e[4]) for e in events[:2]] == [("ops", "3"), ("ops", "2")]
    assert "rollback" in events[0][2]
    screenshot(browser, "audit")


def test_session_inspector_shows_intent_features(browser: Chrome, console: Console) -> None:
    """A key with the session role sees a session's intent features after TrackEvents, and is told when a
    session is unknown."""
    E = pb.EventType
    events = [
        pb.SessionEvent(session_id="visitor-7", type=E.EVENT_TYPE_PAGE_VIEW),
        pb.SessionEvent(
            session_id="visitor-7", type=E.EVENT_TYPE_PRODUCT_VIEW, product_id="p1", category="shoes", price=79.0
        ),
        pb.SessionEvent(session_id="visitor-7", type=E.EVENT_TYPE_ADD_TO_CART, product_id="p1", price=79.0),
    ]
    assert console.shop.track_events(events).accepted == 3

    sign_in(browser, console, key_of("support"), "/sessions")
    assert browser.current_url.endswith("/sessions")
    assert "support (session)" in text(browser, "header .who")
    fill(browser, {"session_id": "visitor-7"})
    browser.find_element(By.CSS_SELECTOR, "main form button").click()
    wait(browser, "#features")
    features = {
        row.find_element(By.TAG_NAME, "th").text: row.find_element(By.TAG_NAME, "td").text
        for row in browser.find_elements(By.CSS_SELECTOR, "#features tbody tr")
    }
    assert features["top_category"] == "shoes"
    assert features["cart"] == "filled"
    assert float(features["share_product_view"]) == pytest.approx(1 / 3)
    support = TailorClient("", channel=console.server.channel, api_key=key_of("support"))
    assert set(features) == set(support.get_session("visitor-7"))  # the features GetSession answers
    screenshot(browser, "session")

    browser.get(console.url + "/sessions?session_id=nobody")
    assert "No session nobody" in text(browser, "#no-session")
