"""The console's security over real HTTP: sign-in and roles, the session cookie, CSRF, the Host allow-list, key
revocation, security headers, the console port, and a console secret shared by replicas.

Every test starts a real server with `start_server` and talks to the console's socket with httpx (no TestClient).
"""

from __future__ import annotations

import hashlib
import re
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from server.state.catalogs import CatalogVersion
from server.tools.launcher import free_port

from ..conftest import RunningServer
from ..pki import CA

COOKIE = "tailor_console"
POINT = "home_layout"
KEYS = {"ops": ["admin"], "dash": ["observe"], "support": ["session"], "storefront": ["decide"]}
SECRET = "ab" * 32
CSRF = re.compile(r'name="csrf" value="([^"]*)"')


def key_of(name: str) -> str:
    return f"key-of-{name}"


def write_keys(path: Path, keys: dict[str, list[str]]) -> Path:
    entries = [
        {"name": n, "sha256": hashlib.sha256(key_of(n).encode()).hexdigest(), "roles": r} for n, r in keys.items()
    ]
    path.write_text(yaml.safe_dump({"keys": entries}))
    return path


class FormFields(HTMLParser):
    """The fields a browser would submit from the form posting to `action` (inputs, checked boxes, textareas,
    selected options; buttons left out)."""

    def __init__(self, action: str) -> None:
        super().__init__()
        self.action = action
        self.fields: dict[str, str] = {}
        self._inside = False
        self._textarea: str | None = None
        self._select: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self._inside = a.get("action") == self.action
        elif tag == "option" and self._inside and self._select is not None:
            if "selected" in a:
                self.fields[self._select] = a.get("value", "")
        elif not self._inside or "name" not in a:
            return
        elif tag == "input" and (a.get("type") != "checkbox" or "checked" in a):
            self.fields[a["name"]] = a.get("value", "on" if a.get("type") == "checkbox" else "")
        elif tag == "textarea":
            self._textarea = a["name"]
            self.fields[a["name"]] = ""
        elif tag == "select":
            self._select = a["name"]

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._inside = False
        elif tag == "textarea":
            self._textarea = None
        elif tag == "select":
            self._select = None

    def handle_data(self, data: str) -> None:
        if self._textarea is not None:
            self.fields[self._textarea] += data


def form_fields(page: str, action: str) -> dict[str, str]:
    parser = FormFields(action)
    parser.feed(page)
    return parser.fields


class Console:
    """A browser of one person: an httpx client with its own cookie jar, on a server's console."""

    def __init__(self, server: RunningServer, tls: ssl.SSLContext | None = None, keep_alive: bool = True) -> None:
        self.base = f"{'https' if tls is not None else 'http'}://127.0.0.1:{server.app.console_port}"
        self.http = httpx.Client(
            base_url=self.base,
            timeout=30,
            verify=tls if tls is not None else True,
            headers={} if keep_alive else {"connection": "close"},  # a connection per request
        )

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.get(path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.post(path, **kwargs)

    def csrf(self, path: str = "/signin") -> str:
        """The CSRF token of this browser's session, from a page's form."""
        found = CSRF.search(self.get(path).text)
        assert found is not None, f"no csrf field on {path}"
        return found.group(1)

    def signin(self, name: str, key: str | None = None) -> httpx.Response:
        return self.post("/signin", data={"key": key or key_of(name), "csrf": self.csrf("/signin")})

    @property
    def cookie(self) -> str | None:
        return self.http.cookies.get(COOKIE)

    def close(self) -> None:
        self.http.close()


def set_cookie(response: httpx.Response) -> str:
    """The response's Set-Cookie of the console session."""
    cookies = [c for c in response.headers.get_list("set-cookie") if c.startswith(f"{COOKIE}=")]
    assert len(cookies) == 1, response.headers
    return cookies[0]


def current(server: RunningServer, name: str = POINT) -> CatalogVersion:
    return server.run(server.app.catalog_store.current())[name]


def audit_length(server: RunningServer) -> int:
    return len(server.run(server.app.catalog_store.audit(1000)))


@pytest.fixture
def console() -> Iterator[Callable[..., Console]]:
    """Factory: console(server, tls=None, keep_alive=True) -> a fresh browser (closed at teardown)."""
    opened: list[Console] = []

    def open_console(server: RunningServer, **kwargs: Any) -> Console:
        opened.append(Console(server, **kwargs))
        return opened[-1]

    yield open_console
    for c in opened:
        c.close()


@pytest.fixture
def keyfile(tmp_path: Path) -> Path:
    return write_keys(tmp_path / "keys.yaml", KEYS)


@pytest.fixture
def keyed(start_server: Callable[..., RunningServer], catalog_dir: Path, keyfile: Path) -> RunningServer:
    """A server with API keys and its console on; the key file is reloaded only when a test says so."""
    return start_server(catalog_dir, console_port=free_port(), api_keys=keyfile, credentials_poll_seconds=3600)


# --- sign-in and roles -----------------------------------------------------------------------------------


def test_without_keys_loopback_is_the_local_admin(
    start_server: Callable[..., RunningServer], catalog_dir: Path, console: Callable[..., Console]
) -> None:
    server = start_server(catalog_dir, console_port=free_port())
    browser = console(server)
    page = browser.get("/")
    assert page.status_code == 200
    assert "local (admin)" in page.text and f'href="/points/{POINT}"' in page.text
    signin = browser.get("/signin")  # nothing to sign in to
    assert signin.status_code == 303 and signin.headers["location"] == "/"
    # the local admin may change things (with the form's token)
    token = browser.csrf("/")
    paused = browser.post(f"/points/{POINT}/pause", data={"csrf": token, "action": "grid", "paused": "true"})
    assert paused.status_code == 303
    assert current(server).version == 2 and current(server).document is not None


def own_address() -> str | None:
    """This machine's address on its default route (not loopback), if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 9))  # UDP: nothing is sent
        except OSError:
            return None
        address: str = probe.getsockname()[0]
    return None if address.startswith("127.") or address == "0.0.0.0" else address


def test_without_keys_other_machines_are_refused(start_server: Callable[..., RunningServer], catalog_dir: Path) -> None:
    """Protected mode: the console answers only callers on this machine (loopback), even when bound to all."""
    address = own_address()
    if address is None:
        pytest.skip("no non-loopback address to call from")
    server = start_server(catalog_dir, console_port=free_port(), console_host="0.0.0.0")
    url = f"http://{address}:{server.app.console_port}"
    with httpx.Client(base_url=url, headers={"host": "localhost"}, timeout=30) as remote:
        for path in ("/", f"/points/{POINT}", "/audit", "/sessions"):
            page = remote.get(path)
            assert page.status_code == 403, path
            assert "--api-keys" in page.text
        assert remote.post(f"/points/{POINT}/pause", data={"action": "grid", "paused": "true"}).status_code == 403
    assert current(server).version == 1


def test_with_keys_everything_needs_a_sign_in(keyed: RunningServer, console: Callable[..., Console]) -> None:
    browser = console(keyed)
    for path in ("/", f"/points/{POINT}", f"/points/{POINT}/edit", f"/points/{POINT}/history", "/audit", "/sessions"):
        page = browser.get(path)
        assert page.status_code == 303, path
        assert page.headers["location"] == f"/signin?next={path}"
    for path in (f"/points/{POINT}/edit", f"/points/{POINT}/pause", f"/points/{POINT}/rollback"):
        assert browser.post(path, data={"csrf": browser.csrf(), "do": "save"}).status_code == 303, path
    signin = browser.get("/signin")
    assert signin.status_code == 200 and 'name="key"' in signin.text
    assert current(keyed).version == 1


def test_a_wrong_key_is_refused(keyed: RunningServer, console: Callable[..., Console]) -> None:
    browser = console(keyed)
    for key in ("key-of-nobody", key_of("ops") + " ", key_of("ops").upper()):
        refused = browser.signin("ops", key=key)
        assert refused.status_code == 401
        assert 'id="signin-error"' in refused.text and "Unknown key." in refused.text
        assert key not in refused.text  # the key is not echoed back
        assert browser.get("/").status_code == 303


def test_an_observe_key_reads_but_cannot_change(keyed: RunningServer, console: Callable[..., Console]) -> None:
    browser = console(keyed)
    signed = browser.signin("dash")
    assert signed.status_code == 303 and signed.headers["location"] == "/"
    assert "dash" not in set_cookie(signed) and key_of("dash") not in set_cookie(signed)
    assert browser.cookie is not None
    for path in ("/", f"/points/{POINT}", f"/points/{POINT}/history", "/audit", f"/points/{POINT}/edit"):
        page = browser.get(path)
        assert page.status_code == 200, path
        assert "dash (observe)" in page.text
    assert 'id="pause-grid"' not in browser.get(f"/points/{POINT}").text  # no admin buttons shown
    before, events = current(keyed), audit_length(keyed)

    fields = form_fields(browser.get(f"/points/{POINT}/edit").text, f"/points/{POINT}/edit")
    assert fields["csrf"] == browser.csrf("/")
    for do in ("preview", "save"):
        edit = browser.post(f"/points/{POINT}/edit", data={**fields, "policy.holdout_share": "0.2", "do": do})
        assert edit.status_code == 403 and "admin" in edit.text
    token = browser.csrf("/")
    pause = browser.post(f"/points/{POINT}/pause", data={"csrf": token, "action": "grid", "paused": "true"})
    assert pause.status_code == 403
    rollback = browser.post(
        f"/points/{POINT}/rollback", data={"csrf": token, "to": "1", "expected_version": "1", "do": "rollback"}
    )
    assert rollback.status_code == 403
    assert current(keyed) == before and audit_length(keyed) == events


def test_a_decide_only_key_cannot_sign_in(keyed: RunningServer, console: Callable[..., Console]) -> None:
    browser = console(keyed)
    refused = browser.signin("storefront")
    assert refused.status_code == 401
    assert "has no console role" in refused.text
    assert browser.get("/").status_code == 303


def test_the_session_inspector_needs_the_session_role(keyed: RunningServer, console: Callable[..., Console]) -> None:
    support, dash, ops = console(keyed), console(keyed), console(keyed)
    for browser, name in ((support, "support"), (dash, "dash"), (ops, "ops")):
        assert browser.signin(name).status_code == 303
    for path in ("/sessions", "/sessions?session_id=s1"):
        assert support.get(path).status_code == 200
        assert ops.get(path).status_code == 200  # admin holds every role
        refused = dash.get(path)
        assert refused.status_code == 403 and "<code>session</code> role" in refused.text
    assert "No session s1" in support.get("/sessions?session_id=s1").text
    assert support.get("/").status_code == 403  # session alone does not read the catalogs
    assert 'href="/sessions"' not in dash.get("/").text


def test_an_admin_key_can_edit(keyed: RunningServer, console: Callable[..., Console]) -> None:
    browser = console(keyed)
    assert browser.signin("ops").status_code == 303
    fields = form_fields(browser.get(f"/points/{POINT}/edit").text, f"/points/{POINT}/edit")
    assert fields["count"] == "3" and fields["expected_version"] == "1"
    changed = {**fields, "policy.holdout_share": "0.2"}
    preview = browser.post(f"/points/{POINT}/edit", data={**changed, "do": "preview"})
    assert preview.status_code == 200 and 'id="preview"' in preview.text and 'id="save-button"' in preview.text
    assert current(keyed).version == 1  # a preview saves nothing
    saved = browser.post(f"/points/{POINT}/edit", data={**changed, "do": "save"})
    assert saved.status_code == 303 and saved.headers["location"].startswith(f"/points/{POINT}")
    assert "saved as version 2" in browser.get(saved.headers["location"]).text
    now = current(keyed)
    assert now.version == 2 and now.actor == "ops" and now.document is not None
    assert now.document["policy"]["holdout_share"] == 0.2
    # the same form again: the version it was made from is gone
    stale = browser.post(f"/points/{POINT}/edit", data={**changed, "policy.holdout_share": "0.3", "do": "save"})
    assert stale.status_code == 400 and "Reload the page" in stale.text
    assert current(keyed).version == 2
    audit = browser.get(f"/audit?decision_point={POINT}")
    assert audit.status_code == 200 and "<td>ops</td>" in audit.text


# --- the session cookie ------------------------------------------------------------------------------------


def test_the_session_cookie_is_httponly_and_strict(keyed: RunningServer, console: Callable[..., Console]) -> None:
    browser = console(keyed)
    signed = browser.signin("dash")
    flags = [f.strip().lower() for f in set_cookie(signed).split(";")[1:]]
    assert "httponly" in flags and "samesite=strict" in flags and "path=/" in flags
    assert "secure" not in flags  # plain HTTP: a Secure cookie would never come back
    assert any(f.startswith("max-age=") for f in flags)


def test_with_tls_the_console_serves_https_and_the_cookie_is_secure(
    start_server: Callable[..., RunningServer],
    catalog_dir: Path,
    keyfile: Path,
    tmp_path: Path,
    console: Callable[..., Console],
) -> None:
    ca = CA(tmp_path / "pki")
    issued = ca.issue("localhost")
    server = start_server(
        catalog_dir, console_port=free_port(), api_keys=keyfile, tls_cert=issued.cert, tls_key=issued.key
    )
    trust = ssl.create_default_context(cafile=str(ca.path))
    browser = console(server, tls=trust)
    signed = browser.signin("dash")
    assert signed.status_code == 303
    flags = [f.strip().lower() for f in set_cookie(signed).split(";")[1:]]
    assert "secure" in flags and "httponly" in flags and "samesite=strict" in flags
    assert browser.get("/").status_code == 200  # the Secure cookie comes back over https
    with httpx.Client(timeout=5) as plain, pytest.raises(httpx.HTTPError):
        plain.get(f"http://127.0.0.1:{server.app.console_port}/signin")  # no plain HTTP on the TLS port


def test_signing_in_starts_a_new_session(keyed: RunningServer, console: Callable[..., Console]) -> None:
    """No session fixation: the cookie and CSRF token from before the sign-in are not the signed-in session's."""
    browser = console(keyed)
    token = browser.csrf("/signin")
    anonymous = browser.cookie
    assert browser.post("/signin", data={"key": key_of("ops"), "csrf": token}).status_code == 303
    assert browser.cookie != anonymous
    assert browser.csrf("/") != token
    stale = browser.post(f"/points/{POINT}/pause", data={"csrf": token, "action": "grid", "paused": "true"})
    assert stale.status_code == 403
    assert current(keyed).version == 1


def test_signing_out_ends_the_session(keyed: RunningServer, console: Callable[..., Console]) -> None:
    browser = console(keyed)
    assert browser.signin("dash").status_code == 303
    assert browser.post("/signout", data={"csrf": "wrong"}).status_code == 303
    assert browser.get("/").status_code == 200  # a forged sign-out does nothing
    out = browser.post("/signout", data={"csrf": browser.csrf("/")})
    assert out.status_code == 303 and out.headers["location"] == "/signin"
    assert browser.get("/").status_code == 303


# --- CSRF --------------------------------------------------------------------------------------------------


def test_posts_without_the_right_csrf_token_are_refused(keyed: RunningServer, console: Callable[..., Console]) -> None:
    browser, other = console(keyed), console(keyed)
    assert browser.signin("ops").status_code == 303
    assert other.signin("ops").status_code == 303
    fields = form_fields(browser.get(f"/points/{POINT}/edit").text, f"/points/{POINT}/edit")
    edit = {**fields, "policy.holdout_share": "0.2", "do": "save"}
    pause = {"csrf": fields["csrf"], "action": "grid", "paused": "true"}
    rollback = {"csrf": fields["csrf"], "to": "1", "expected_version": "1", "do": "rollback"}
    before, events = current(keyed), audit_length(keyed)
    wrong_tokens: list[str | None] = [None, "", "x", fields["csrf"][:-1], fields["csrf"] + "x", other.csrf("/")]
    for wrong in wrong_tokens:
        for path, form in (("edit", edit), ("pause", pause), ("rollback", rollback)):
            data = {k: v for k, v in form.items() if k != "csrf"}
            if wrong is not None:
                data["csrf"] = wrong
            refused = browser.post(f"/points/{POINT}/{path}", data=data)
            assert refused.status_code == 403, (path, wrong)
            assert "did not come from this console" in refused.text
        # the token in the query string instead of the form is not the form's token
        query = browser.post(f"/points/{POINT}/pause?csrf={fields['csrf']}", data={"action": "grid", "paused": "true"})
        assert query.status_code == 403
    assert current(keyed) == before and audit_length(keyed) == events
    # the right token works (the test above refused for the token alone)
    assert browser.post(f"/points/{POINT}/pause", data=pause).status_code == 303
    assert current(keyed).version == before.version + 1


def test_the_sign_in_form_needs_its_csrf_token(keyed: RunningServer, console: Callable[..., Console]) -> None:
    browser, other = console(keyed), console(keyed)
    browser.csrf("/signin")  # the session (and its token) exist
    for token in (None, "", "forged", other.csrf("/signin")):
        data = {"key": key_of("ops")} | ({} if token is None else {"csrf": token})
        refused = browser.post("/signin", data=data)
        assert refused.status_code == 401, token
        assert "The form expired" in refused.text
        assert browser.get("/").status_code == 303
    # a cookie-less post (a cross-site form: SameSite=Strict sends no cookie) has no session token to match
    with httpx.Client(base_url=browser.base, timeout=30) as cross_site:
        refused = cross_site.post("/signin", data={"key": key_of("ops"), "csrf": browser.csrf("/signin")})
        assert refused.status_code == 401


# --- Host allow-list ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("keys", [True, False], ids=["keys", "protected"])
def test_a_foreign_host_header_is_refused(
    start_server: Callable[..., RunningServer], catalog_dir: Path, keyfile: Path, keys: bool
) -> None:
    """Against DNS rebinding: a page under another name must not reach the console, even on loopback."""
    server = start_server(catalog_dir, console_port=free_port(), **({"api_keys": keyfile} if keys else {}))
    with httpx.Client(base_url=f"http://127.0.0.1:{server.app.console_port}", timeout=30) as client:
        for host in ("evil.example", "evil.example:80", "127.0.0.1.evil.example", "localhost.evil.example", ""):
            for path in ("/", "/signin", f"/points/{POINT}"):
                refused = client.get(path, headers={"host": host})
                assert refused.status_code == 400, (host, path)
                assert "set-cookie" not in refused.headers
        refused = client.post(f"/points/{POINT}/pause", data={"action": "grid"}, headers={"host": "evil.example"})
        assert refused.status_code == 400
        for host in ("localhost", f"localhost:{server.app.console_port}", "127.0.0.1"):
            assert client.get("/signin" if keys else "/", headers={"host": host}).status_code == 200, host
    assert current(server).version == 1


def test_console_hosts_names_the_hosts_served(
    start_server: Callable[..., RunningServer], catalog_dir: Path, keyfile: Path
) -> None:
    server = start_server(catalog_dir, console_port=free_port(), api_keys=keyfile, console_hosts=["tailor.example"])
    with httpx.Client(
        base_url=f"http://127.0.0.1:{server.app.console_port}", headers={"host": "tailor.example"}, timeout=30
    ) as client:
        page = client.get("/signin")
        assert page.status_code == 200
        token = CSRF.search(page.text)
        assert token is not None
        signed = client.post("/signin", data={"key": key_of("dash"), "csrf": token.group(1)})
        assert signed.status_code == 303
        assert client.get("/").status_code == 200
        assert client.get("/", headers={"host": "tailor.example:443"}).status_code == 200
        for host in ("localhost", "127.0.0.1", "evil.example", "sub.tailor.example"):
            assert client.get("/", headers={"host": host}).status_code == 400, host


# --- key revocation ----------------------------------------------------------------------------------------


def test_a_key_removed_from_the_file_signs_its_holder_out(
    keyed: RunningServer, keyfile: Path, console: Callable[..., Console]
) -> None:
    dash, ops = console(keyed), console(keyed)
    assert dash.signin("dash").status_code == 303 and ops.signin("ops").status_code == 303
    assert dash.get("/").status_code == 200 and ops.get("/").status_code == 200
    kept = {n: r for n, r in KEYS.items() if n != "dash"}
    write_keys(keyfile, kept)
    assert keyed.call(keyed.app.reload_keys)
    gone = dash.get(f"/points/{POINT}")
    assert gone.status_code == 303 and gone.headers["location"] == f"/signin?next=/points/{POINT}"
    assert dash.get("/").status_code == 303  # and stays out
    assert dash.signin("dash").status_code == 401
    assert ops.get("/").status_code == 200  # the others stay signed in

    # a role taken away takes effect at once too
    write_keys(keyfile, {**kept, "ops": ["observe"]})
    assert keyed.call(keyed.app.reload_keys)
    token = ops.csrf("/")
    assert "ops (observe)" in ops.get("/").text
    pause = ops.post(f"/points/{POINT}/pause", data={"csrf": token, "action": "grid", "paused": "true"})
    assert pause.status_code == 403
    assert current(keyed).version == 1


# --- headers -----------------------------------------------------------------------------------------------


def assert_security_headers(response: httpx.Response) -> None:
    where = f"{response.request.method} {response.request.url.path} -> {response.status_code}"
    csp = response.headers.get("content-security-policy", "")
    assert "frame-ancestors 'none'" in csp, where
    assert "default-src 'self'" in csp and "script-src" not in csp.replace("default-src", ""), where
    assert response.headers.get("x-frame-options") == "DENY", where
    assert response.headers.get("x-content-type-options") == "nosniff", where
    assert "no-store" in response.headers.get("cache-control", ""), where
    assert "server" not in response.headers, where


def test_security_headers_on_every_answer(keyed: RunningServer, console: Callable[..., Console]) -> None:
    browser = console(keyed)
    answers = [
        browser.get("/signin"),  # 200
        browser.get("/"),  # 303
        browser.signin("nobody"),  # 401
    ]
    answers.append(browser.signin("support"))  # 303, sets the cookie
    answers += [
        browser.get("/"),  # 403: session alone
        browser.get("/sessions?session_id=s1"),  # 200
        browser.get("/static/console.css"),  # 200, static
        browser.get("/no/such/page"),  # 404
        browser.post(f"/points/{POINT}/pause", data={}),  # 403
        browser.get(f"/points/{POINT}/pause"),  # 405
    ]
    statuses = {a.status_code for a in answers}
    assert statuses == {200, 303, 401, 403, 404, 405}
    for answer in answers:
        assert_security_headers(answer)


# --- the console port --------------------------------------------------------------------------------------


def test_console_port_zero_serves_no_console(
    start_server: Callable[..., RunningServer], catalog_dir: Path, keyfile: Path
) -> None:
    server = start_server(catalog_dir, console_port=0, api_keys=keyfile)
    assert server.app.console is None and server.app.console_port is None


def test_a_taken_console_port_fails_the_start(start_server: Callable[..., RunningServer], catalog_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=rf"^console: cannot listen on 127\.0\.0\.1:{port}: "):
            start_server(catalog_dir, console_port=port)


# --- serving -----------------------------------------------------------------------------------------------


def test_pages_answer_without_a_nagle_delay(
    start_server: Callable[..., RunningServer], catalog_dir: Path, console: Callable[..., Console]
) -> None:
    """On a kept-alive connection (as browsers use) every answer waited ~40 ms: uvicorn writes the head and the
    body separately, and with Nagle on the body waits for the delayed ACK of the head. asyncio turns Nagle off
    only for sockets whose proto is IPPROTO_TCP; ConsoleServer's `socket.socket(family, SOCK_STREAM)` has 0."""
    server = start_server(catalog_dir, console_port=free_port())
    browser = console(server)
    browser.get("/static/console.css")
    took = []
    for _ in range(7):
        started = time.perf_counter()
        assert browser.get("/static/console.css").status_code == 200
        took.append(time.perf_counter() - started)
    assert sorted(took)[3] < 0.025, took


# --- replicas ----------------------------------------------------------------------------------------------


def test_replicas_with_one_console_secret_share_sessions(
    start_server: Callable[..., RunningServer],
    catalog_dir: Path,
    keyfile: Path,
    tmp_path: Path,
    console: Callable[..., Console],
) -> None:
    def replica(name: str, secret: str | None) -> RunningServer:
        return start_server(
            catalog_dir, console_port=free_port(), api_keys=keyfile, console_secret=secret, data_dir=tmp_path / name
        )

    first, second = replica("first", SECRET), replica("second", SECRET)
    other, unset = replica("other", "cd" * 32), replica("unset", None)
    browser = console(first)
    assert browser.signin("dash").status_code == 303
    cookie = browser.cookie
    assert cookie is not None
    for server, works in ((first, True), (second, True), (other, False), (unset, False)):
        with httpx.Client(
            base_url=f"http://127.0.0.1:{server.app.console_port}", cookies={COOKIE: cookie}, timeout=30
        ) as elsewhere:
            page = elsewhere.get("/")
            assert page.status_code == (200 if works else 303), server.app.console_port
            assert ("dash (observe)" in page.text) is works
    # a tampered cookie is no session anywhere
    payload, stamp, signature = cookie.split(".")
    forged = f"{payload}.{stamp}.{signature[:-2]}{'AA' if not signature.endswith('AA') else 'BB'}"
    with httpx.Client(
        base_url=f"http://127.0.0.1:{second.app.console_port}", cookies={COOKIE: forged}, timeout=30
    ) as forger:
        assert forger.get("/").status_code == 303
