"""Hostile input to every console route, property-based, as a signed-in admin over real HTTP: random, huge,
unicode and invalid-UTF-8 form fields and query parameters, odd path parameters, missing fields, raw bodies.

Whatever arrives, every answer is a defined one (below 500, never a trace, never an unescaped tag of the
input, never a redirect off the console) and the server goes on deciding over gRPC. The hostile inputs that
broke the console are pinned by the plain tests at the end; the strategies leave out the ones still open
(a huge `count`, deeply nested YAML in features) as they would stop every run at the same place.
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import event, given
from hypothesis import strategies as st

from server.tools.launcher import free_port
from tailor import TailorClient

from ..api.test_hostile_input import FUZZ
from ..conftest import LAYOUTS, RunningServer, write_catalog
from .test_http import CSRF, KEYS, Console, current, form_fields, key_of, write_keys

POINT = "home_layout"
GUARD = "guard"  # a decision point no fuzzed request names: Decide on it must keep working
WEIRD = [
    "",
    " ",
    "\x00",
    "\r\n",
    "é" * 50,
    "💥" * 100,
    "<script>alert(1)</script>",
    '"><script>alert(1)</script>',
    "{{ 7 * 7 }}",
    "{% raw %}",
    "../../etc/passwd",
    "%00",
    "%ff%fe",
    "//evil.example",
    "nan",
    "-1",
    "0",
    "1e999",
    "__proto__",
    "a" * 5000,
]
YAMLISH = [
    "a: 1",
    "a: b\nc: 2.5",
    "a: [1, 2]",
    "a: {b: c}",
    "a: &x 1\nb: *x",
    "- 1\n- 2",
    "a: !!python/object/apply:os.system [echo]",
    "a: !!binary aGVsbG8=",
    "a: .nan",
    "a: -.inf",
    "a: 2020-01-01",
    "a: null",
    "'': 1",
    ": :",
    "a: 'unterminated",
    "\ta: 1",
    "[" * 40 + "]" * 40,
    "? [a]\n: 1",
]
FIELDS = [
    "count",
    "expected_version",
    "do",
    "policy.mode",
    "policy.baseline_action",
    "policy.holdout_share",
    "policy.apprentice_exploration",
    "policy.reward_window_seconds",
    *(f"{row}.{part}" for row in ("a0", "a1", "a2", "a5", "new") for part in (
        "id", "features", "payload", "active_from", "active_until", "paused", "remove",
    )),
]  # fmt: skip
TIMES = ["2026-12-24T00:00:00Z", "2020-01-01T00:00:00+00:00", "2999-01-01T00:00:00Z", "yesterday", "2026-13-45"]

texts = st.one_of(st.text(max_size=40), st.sampled_from(WEIRD), st.text(min_size=200, max_size=1500))
small_ints = st.integers(-3, 8).map(str)
# bytes for invalid UTF-8 (and everything else) once percent-encoded
raw = st.one_of(st.binary(max_size=40), st.sampled_from([b"\xff\xfe", b"\xc3", b"\xed\xa0\x80", b"\x00", b"\xc0\xaf"]))
values = st.one_of(texts, raw, st.sampled_from(YAMLISH), st.sampled_from(TIMES), small_ints)
# form fields may also be huge (query parameters stay below what an HTTP server takes in a request line)
field_values = st.one_of(values, st.just("a: " + "x" * 300_000), st.just("💥" * 100_000))
numbers = st.one_of(
    small_ints, st.integers().map(str), st.sampled_from(["1.5", "1e3", " 1", "1_0", "0x10", "١٢"]), values
)


def not_a_count(value: str | bytes) -> str | bytes:
    """The value made unreadable as a number of rows (by int() or Jinja's |int, which also reads floats such as
    `1e9`): a huge count is still open (test_a_huge_action_count_is_bounded)."""
    return value + b"x" if isinstance(value, bytes) else value + "x"


counts = st.one_of(small_ints, st.one_of(texts, raw, st.sampled_from(YAMLISH)).map(not_a_count))
names = st.one_of(
    st.sampled_from([POINT, POINT, "nope", "home_layout ", "HOME_LAYOUT", "%2e%2e", "..", "a" * 3000]), texts, raw
)

# mostly the point that exists, so that requests get past the lookup
ours: st.SearchStrategy[str | bytes] = st.sampled_from([True, True, True, False]).flatmap(
    lambda ok: st.just(POINT) if ok else names
)


def encode(part: str | bytes) -> str:
    return urllib.parse.quote_from_bytes(part if isinstance(part, bytes) else part.encode("utf-8", "surrogatepass"))


def body(fields: list[tuple[str | bytes, str | bytes]]) -> bytes:
    """An application/x-www-form-urlencoded body, percent-encoded here (so any bytes can be sent)."""
    return "&".join(f"{encode(k)}={encode(v)}" for k, v in fields).encode()


def query(params: list[tuple[str | bytes, str | bytes]]) -> str:
    return "?" + "&".join(f"{encode(k)}={encode(v)}" for k, v in params) if params else ""


FORM = {"content-type": "application/x-www-form-urlencoded"}


@dataclass
class Target:
    server: RunningServer
    admin: Console
    decide: TailorClient
    token: str  # the admin session's CSRF token (it lasts as long as the session)

    def post(self, path: str, fields: list[tuple[str | bytes, str | bytes]], **headers: str) -> httpx.Response:
        return self.admin.post(path, content=body(fields), headers={**FORM, **headers})


def assert_defined(response: httpx.Response) -> None:
    where = f"{response.request.method} {str(response.request.url)[:200]} -> {response.status_code}"
    assert response.status_code < 500, where
    text = response.text
    assert "Traceback" not in text and 'File "' not in text, where
    assert "<script" not in text.lower(), where  # the console has no script: any is the input, unescaped
    if response.status_code in (301, 302, 303, 307, 308):
        location = response.headers["location"]
        parts = urllib.parse.urlsplit(location)
        assert not parts.scheme and not parts.netloc and location.startswith("/"), (where, location)
        assert not location.startswith("//") and "\\" not in location, (where, location)
        assert all(c.isprintable() and not c.isspace() for c in location), (where, location)


def assert_healthy(target: Target) -> None:
    """The server still decides over gRPC, reports SERVING, and the admin is still signed in."""
    assert target.decide.decide("s-guard", GUARD).action_id in LAYOUTS
    health = health_pb2_grpc.HealthStub(target.server.channel)
    status = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10).status
    assert status == health_pb2.HealthCheckResponse.SERVING
    overview = target.admin.get("/")
    assert_defined(overview)
    assert "ops (admin)" in overview.text


@pytest.fixture
def target(start_server: Callable[..., RunningServer], catalog_dir: Path, tmp_path: Path) -> Iterator[Target]:
    """A server with keys, signed in as its admin: one per test, shared by the test's examples."""
    write_catalog(catalog_dir, GUARD, LAYOUTS)
    keys = write_keys(tmp_path / "keys.yaml", KEYS)
    server = start_server(catalog_dir, console_port=free_port(), api_keys=keys, credentials_poll_seconds=3600)
    admin = Console(server, keep_alive=False)  # a fresh connection per request: see test_http's Nagle test
    assert admin.signin("ops").status_code == 303
    decide = TailorClient("", channel=server.channel, api_key=key_of("storefront"))
    found = Target(server, admin, decide, admin.csrf("/"))
    assert_healthy(found)
    yield found
    admin.close()


def pages(target: Target, *paths: str) -> None:
    """The pages that show what a fuzzed request may have changed (stored input: escaped, no trace)."""
    for path in paths:
        assert_defined(target.admin.get(path))


# --- pages and query parameters ----------------------------------------------------------------------------

PATHS = ["/", "/audit", "/sessions", "/points/{}", "/points/{}/edit", "/points/{}/history", "/signin", "/static/{}"]
PARAMS = ["hours", "message", "decision_point", "session_id", "next", "csrf"]


@FUZZ
@given(
    path=st.sampled_from(PATHS),
    name=names,
    params=st.lists(st.tuples(st.one_of(st.sampled_from(PARAMS), texts, raw), values), max_size=4),
    method=st.sampled_from(["GET", "GET", "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"]),
)
def test_every_page_with_hostile_parameters(
    target: Target,
    path: str,
    name: str | bytes,
    params: list[tuple[str | bytes, str | bytes]],
    method: str,
) -> None:
    url = path.format(encode(name)) + query(params)
    response = target.admin.http.request(method, url, content=body([("csrf", target.token)]), headers=FORM)
    assert_defined(response)
    assert_healthy(target)


@FUZZ
@given(hours=st.one_of(values, st.integers().map(str)), message=values, decision_point=values, session_id=values)
def test_known_parameters_with_hostile_values(
    target: Target, hours: str | bytes, message: str | bytes, decision_point: str | bytes, session_id: str | bytes
) -> None:
    assert_defined(target.admin.get(f"/points/{POINT}" + query([("hours", hours), ("message", message)])))
    assert_defined(target.admin.get("/audit" + query([("decision_point", decision_point)])))
    assert_defined(target.admin.get("/sessions" + query([("session_id", session_id)])))
    assert_healthy(target)


header_texts = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=300)


@FUZZ
@given(
    host=st.one_of(st.sampled_from(["127.0.0.1", "localhost", "evil.example", "[::1]", "127.0.0.1:99999", ":", ""]),
                   header_texts),
    cookie=st.one_of(header_texts.filter(lambda c: ";" not in c), st.just("e30=.AAAAAA.AAAA")),
    path=st.sampled_from(["/", "/signin", f"/points/{POINT}", "/sessions", "/static/console.css"]),
)  # fmt: skip
def test_hostile_host_and_cookie_headers(target: Target, host: str, cookie: str, path: str) -> None:
    """Any Host header and any session cookie: a defined answer, and no session without the console's signature."""
    with httpx.Client(base_url=target.admin.base, timeout=30, headers={"connection": "close"}) as stranger:
        response = stranger.get(path, headers={"host": host, "cookie": f"tailor_console={cookie}"})
        assert_defined(response)
        assert response.status_code in (200, 303, 400, 404), response.status_code
        assert "ops (admin)" not in response.text
    assert_healthy(target)


# --- the forms ---------------------------------------------------------------------------------------------


@FUZZ
@given(
    changes=st.one_of(st.just({}), st.dictionaries(st.sampled_from(FIELDS), field_values, max_size=6)),
    extra=st.one_of(st.just([]), st.lists(st.tuples(st.one_of(texts, raw), field_values), max_size=3)),
    dropped=st.one_of(st.just(set()), st.sets(st.sampled_from(FIELDS), max_size=4)),
    count=st.one_of(st.none(), st.none(), counts),
    expected=st.one_of(st.none(), st.none(), numbers),
    do=st.sampled_from(["save", "save", "save", "preview", "preview", None, "delete", "💥"]),
    csrf=st.sampled_from(["right", "right", "right", "right", "missing", "wrong"]),
    name=ours,
)
def test_the_catalog_editor(
    target: Target,
    changes: dict[str, str | bytes],
    extra: list[tuple[str | bytes, str | bytes]],
    dropped: set[str],
    count: str | bytes | None,
    expected: str | bytes | None,
    do: str | None,
    csrf: str,
    name: str | bytes,
) -> None:
    """The editor's real form, with fields changed, dropped and added."""
    form = form_fields(target.admin.get(f"/points/{POINT}/edit").text, f"/points/{POINT}/edit")
    fields: dict[str, str | bytes] = {k: v for k, v in form.items() if k not in dropped}
    fields.update({k: v for k, v in changes.items() if k != "count"})
    for key, value in (("count", count), ("expected_version", expected)):
        if value is not None:
            fields[key] = value
    fields.pop("csrf", None)
    if csrf != "missing":
        fields["csrf"] = form["csrf"] if csrf == "right" else "x" + form["csrf"]
    if do is not None:
        fields["do"] = do
    before = current(target.server)
    response = target.post(f"/points/{encode(name)}/edit", [*fields.items(), *extra])
    event(f"edit: {response.status_code}")
    assert_defined(response)
    if csrf != "right" or do != "save" or response.status_code != 303:
        assert current(target.server) == before
    pages(target, f"/points/{POINT}", f"/points/{POINT}/history", f"/audit?decision_point={POINT}")
    assert_healthy(target)


@FUZZ
@given(
    action=st.one_of(st.sampled_from(list(LAYOUTS)), st.sampled_from(list(LAYOUTS)), field_values),
    paused=st.one_of(st.sampled_from(["true", "false"]), field_values),
    drop=st.sets(st.sampled_from(["action", "paused", "csrf"]), max_size=2),
    name=ours,
)
def test_pause(target: Target, action: str | bytes, paused: str | bytes, drop: set[str], name: str | bytes) -> None:
    fields = {"csrf": target.token, "action": action, "paused": paused}
    response = target.post(f"/points/{encode(name)}/pause", [(k, v) for k, v in fields.items() if k not in drop])
    event(f"pause: {response.status_code}")
    assert_defined(response)
    pages(target, f"/points/{POINT}")
    assert_healthy(target)


@FUZZ
@given(
    to=st.one_of(small_ints, small_ints, numbers),
    expected=st.one_of(st.just("current"), st.just("current"), small_ints, numbers),
    do=st.sampled_from(["rollback", "preview", "", "💥"]),
    drop=st.sets(st.sampled_from(["to", "expected_version", "do"]), max_size=2),
    name=ours,
)
def test_rollback(
    target: Target, to: str | bytes, expected: str | bytes, do: str, drop: set[str], name: str | bytes
) -> None:
    if current(target.server).version < 3:  # versions to roll back to
        for paused in ("true", "false"):
            target.post(f"/points/{POINT}/pause", [("csrf", target.token), ("action", "grid"), ("paused", paused)])
    version = str(current(target.server).version)
    fields = {"csrf": target.token, "to": to, "expected_version": version if expected == "current" else expected}
    fields["do"] = do
    response = target.post(f"/points/{encode(name)}/rollback", [(k, v) for k, v in fields.items() if k not in drop])
    event(f"rollback: {response.status_code}")
    assert_defined(response)
    pages(target, f"/points/{POINT}/history")
    assert_healthy(target)


ROUTES = ["/signin", "/signout", f"/points/{POINT}/edit", f"/points/{POINT}/pause", f"/points/{POINT}/rollback"]
TYPES = [
    "application/x-www-form-urlencoded",
    "application/x-www-form-urlencoded; charset=latin-1",
    "multipart/form-data; boundary=x",
    "multipart/form-data",
    "multipart/form-data; boundary=",
    "application/json",
    "text/plain",
    "junk/type; boundary",
    None,
]


@FUZZ
@given(
    route=st.sampled_from(ROUTES[1:]),  # /signin is the sign-in fuzz's; /signout with junk keeps the session
    content=st.one_of(
        st.binary(max_size=2000),
        st.sampled_from([b"--x\r\n", b"--x\r\nContent-Disposition: form-data; name=csrf\r\n\r\n", b"%", b"=&=&"]),
        st.builds(lambda n: b"a=" + b"x" * n, st.sampled_from([10, 1_100_000])),  # past the 1 MB part limit
        st.builds(lambda n: b"&".join(b"f%d=1" % i for i in range(n)), st.sampled_from([999, 1001, 5000])),
    ),
    content_type=st.sampled_from(TYPES),
)
def test_raw_bodies(target: Target, route: str, content: bytes, content_type: str | None) -> None:
    """Bodies that may not be a form at all: none of them is a form with the session's token."""
    before = current(target.server)
    headers = {"content-type": content_type} if content_type is not None else {}
    response = target.admin.post(route, content=content, headers=headers)
    assert_defined(response)
    assert response.status_code != 200 or route == "/signout"
    assert current(target.server) == before
    assert_healthy(target)


@FUZZ
@given(
    key=st.one_of(st.sampled_from([key_of("ops"), key_of("storefront"), key_of("dash"), ""]), values),
    csrf=st.sampled_from(["right", "right", "missing", "wrong"]),
    next_=st.one_of(
        st.sampled_from(
            [
                "//evil.example",
                "/\\evil.example",
                "\\\\evil.example",
                "/\t/evil.example",
                "/%2F/evil.example",
                "https://evil.example",
                "javascript:alert(1)",
                "/\r\nSet-Cookie: x=1",
                f"/points/{POINT}",
                "/audit?decision_point=x&next=//evil.example",
            ]
        ),
        values,
    ),
)
def test_sign_in(target: Target, key: str | bytes, csrf: str, next_: str | bytes) -> None:
    """Anyone may post the sign-in form: whatever they send, it signs in only with a console key and the
    session's token, and never sends the browser off the console."""
    with httpx.Client(base_url=target.admin.base, timeout=30, headers={"connection": "close"}) as anonymous:
        page = anonymous.get("/signin" + query([("next", next_)]))
        assert_defined(page)
        token = CSRF.search(page.text)
        assert token is not None
        fields: list[tuple[str | bytes, str | bytes]] = [("key", key)]
        if csrf != "missing":
            fields.append(("csrf", token.group(1) if csrf == "right" else token.group(1)[::-1]))
        response = anonymous.post("/signin" + query([("next", next_)]), content=body(fields), headers=FORM)
        assert_defined(response)
        signed = response.status_code == 303
        assert signed == (csrf == "right" and key in (key_of("ops"), key_of("dash"))), response.status_code
        assert (anonymous.get("/audit").status_code == 200) is signed
    assert_healthy(target)


# --- inputs that broke the console (server/console/_app.py) -----------------------------------------------


@pytest.mark.parametrize(
    ("route", "fields"),
    [
        ("edit", {"count": "abc"}),
        ("edit", {"count": b"\xff\xfe"}),  # %FF%FE: not UTF-8
        ("edit", {"count": "1", "expected_version": "x"}),
        ("rollback", {"to": "x"}),
        ("rollback", {"to": "1", "expected_version": "1.5"}),
    ],
)
def test_non_numbers_in_number_fields_are_refused(target: Target, route: str, fields: dict[str, str | bytes]) -> None:
    """Once int() of the field, unguarded: a 500 (and the next request on the connection reset)."""
    response = target.post(f"/points/{POINT}/{route}", [("csrf", target.token), *fields.items()])
    assert_defined(response)
    assert_healthy(target)


@pytest.mark.parametrize(
    "field",
    [
        pytest.param(
            "a0.features",
        ),
        "a0.payload",
    ],
)
def test_deeply_nested_yaml_is_refused(target: Target, field: str) -> None:
    form = form_fields(target.admin.get(f"/points/{POINT}/edit").text, f"/points/{POINT}/edit")
    before = current(target.server)
    response = target.post(f"/points/{POINT}/edit", [*{**form, field: "[" * 5000, "do": "save"}.items()])
    assert_defined(response)
    assert response.status_code == 400 and current(target.server) == before


@pytest.mark.parametrize("count", ["5000", "5e3"])
def test_a_huge_action_count_is_bounded(target: Target, count: str) -> None:
    """count=N renders N fieldsets on the serving event loop (Jinja's |int also reads `1e9`): 10**5 takes ~5 s
    (Decide waits as long), 10**6 about a minute and ~860 MB of HTML, 10**9 exhausts memory."""
    started = time.monotonic()
    response = target.post(f"/points/{POINT}/edit", [("csrf", target.token), ("count", count)])
    assert_defined(response)
    assert len(response.content) < 1_000_000 and time.monotonic() - started < 0.5


def alias_bomb(levels: int, width: int = 10) -> str:
    lines = ["a0: &a0 [" + ", ".join(['"xxxxxxxxx"'] * width) + "]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]" for i in range(1, levels)]
    return "\n".join([*lines, f"top: *a{levels - 1}"])


@pytest.mark.parametrize("field", ["a0.payload", "a0.features"])
def test_a_yaml_alias_bomb_is_refused(target: Target, field: str) -> None:
    """A 400-byte field of nested aliases once became a 10**levels string (payload values were str()-ed): 5 levels
    took ~1.3 s and 7 MB, each level ten times more, on the serving loop."""
    form = form_fields(target.admin.get(f"/points/{POINT}/edit").text, f"/points/{POINT}/edit")
    bomb = alias_bomb(5)
    assert len(bomb) < 500
    started = time.monotonic()
    response = target.post(f"/points/{POINT}/edit", [*{**form, field: bomb, "do": "preview"}.items()])
    assert_defined(response)
    assert len(response.content) < 100_000 and time.monotonic() - started < 0.5


def saved_after_an_unrelated_edit(
    start_server: Callable[..., RunningServer], folder: Path, action: dict[str, Any]
) -> dict[str, Any]:
    """The first action of a catalog after opening the editor and saving a change to the holdout share."""
    folder.mkdir()
    document: dict[str, Any] = {
        "decision_point": POINT,
        "policy": {"reward_window_seconds": 60},
        "actions": [{"id": "grid", **action}, {"id": "carousel", "features": {"density": 6.0}}],
    }
    (folder / f"{POINT}.yaml").write_text(yaml.safe_dump(document))
    server = start_server(folder, console_port=free_port(), data_dir=folder.parent / f"{folder.name}-data")
    admin = Console(server, keep_alive=False)
    try:
        form = form_fields(admin.get(f"/points/{POINT}/edit").text, f"/points/{POINT}/edit")
        saved = admin.post(f"/points/{POINT}/edit", data={**form, "policy.holdout_share": "0.1", "do": "save"})
    finally:
        admin.close()
    assert saved.status_code == 303, saved.text[:3000]
    after = current(server).document
    assert after is not None and after["policy"]["holdout_share"] == 0.1
    first: dict[str, Any] = after["actions"][0]
    return first


def test_saving_in_the_editor_keeps_payloads(start_server: Callable[..., RunningServer], tmp_path: Path) -> None:
    """Payload values are text: `yes`, `007`, `red #1`, `null`, `1.50` come back as they were."""
    payload = {"template": "yes", "code": "007", "colour": "red #1", "note": "null", "ratio": "1.50"}
    action = saved_after_an_unrelated_edit(start_server, tmp_path / "payload", {"payload": payload})
    assert action["payload"] == payload


@pytest.mark.parametrize("features", [{"code": "0123"}, {"style": "on"}, {"label": "x #1"}], ids=str)
def test_saving_in_the_editor_keeps_text_features(
    start_server: Callable[..., RunningServer], tmp_path: Path, features: dict[str, str]
) -> None:
    """A text feature must stay the text it was: `0123` came back as the number 83.0 (YAML 1.1 octal), `on` as
    true (refused: the catalog cannot be saved until someone retypes it), `x #1` as `x`."""
    action = saved_after_an_unrelated_edit(start_server, tmp_path / "features", {"features": features})
    assert action["features"] == features
