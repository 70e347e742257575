"""The marketers' console: Starlette pages over the same services as AdminService, served by uvicorn on the
serving event loop (`tailor serve --console-port`, default 8080; 0 turns it off).

Pages: the overview of decision points (decisions/s, mean reward, the live policy's value against uniform random
and the baseline with intervals, model version and age), a decision point (traffic share by action over time,
per-action reward, one-click pause), the catalog editor (a form, not YAML: inline errors, a diff preview before
saving, schedules and pause per action), version history with rollback (the diff shown first), the audit log,
and the session inspector. Charts are inline SVG drawn from the learner's minute series (`ActionSeries`), a few
hundred numbers per page; nothing runs on the serving loop unless someone looks.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import wraps
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from policies import mean_interval
from server.admin import CatalogAdmin
from server.api import KeyRing, Role
from server.catalogs import MAX_CATALOG_ACTIONS
from server.core import Aborted, FieldViolation, InvalidArgument, Metrics, NotFound, RateLimitedLog
from server.learning import BUCKET_SECONDS, ActionSeries, summed
from server.sessions import SessionContext

from ._auth import SESSION_SECONDS, Viewer, csrf_ok, csrf_token, viewer
from ._charts import interval_bars, stacked_shares

log = logging.getLogger("tailor.console")
refused = RateLimitedLog(log, seconds=10.0)  # a key guesser cannot flood the log
HERE = Path(__file__).resolve().parent
POINTS_SHOWN = 60  # points on an over-time chart
MAX_FIELD_CHARS = 65_536  # one text field of the editor


@dataclass(slots=True)
class ConsoleSources:
    """What the console reads and changes: the same objects AdminService and GetSession use."""

    admin: CatalogAdmin
    keys: KeyRing | None
    sessions: SessionContext
    # the learner's series of these decision points over [since, until] (None: this server has none)
    series: Callable[[list[str], float, float], Awaitable[ActionSeries | None]]
    model_ages: Callable[[], dict[str, float]]  # decision point -> when its served model was saved (epoch s)
    tls: bool
    metrics: Metrics


Handler = Callable[[Request, Viewer], Awaitable[Response]]

#: The console's role map: the role each page needs (`admin` has every role). The editor shows the catalog to
#: `observe`, read-only; its POST (preview and save) needs `admin`, checked in the handler.
PAGE_ROLES: dict[str, Role] = {
    "overview": "observe",
    "point": "observe",
    "edit": "observe",
    "pause": "admin",
    "history": "observe",
    "rollback": "admin",
    "audit": "observe",
    "session": "session",
}


def build_console(sources: ConsoleSources, secret: bytes, allowed_hosts: list[str]) -> Starlette:
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.globals["bucket_seconds"] = BUCKET_SECONDS
    templates.env.filters["utc"] = lambda at: datetime.fromtimestamp(float(at), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    templates.env.filters["short"] = lambda v: f"{v:.6g}" if isinstance(v, float) else v

    def render(request: Request, template: str, who: Viewer | None, status: int = 200, **context: Any) -> Response:
        context.update(request=request, viewer=who, csrf=csrf_token(request))
        return templates.TemplateResponse(request, template, context, status_code=status)

    def page(role: Role) -> Callable[[Handler], Callable[[Request], Awaitable[Response]]]:
        def wrap(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
            @wraps(handler)
            async def endpoint(request: Request) -> Response:
                who = viewer(request, sources.keys)
                if who is None:
                    if sources.keys is None:
                        return PlainTextResponse(
                            "This console serves only this machine without API keys (protected mode): "
                            "start tailor serve with --api-keys to sign in from elsewhere.",
                            status_code=403,
                        )
                    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                    return RedirectResponse(f"/signin?next={quote(target, safe='/')}", status_code=303)
                if not who.can(role):
                    return render(request, "denied.html", who, status=403, role=role)
                if request.method == "POST":
                    form = await request.form()
                    if not csrf_ok(request, form.get("csrf")):
                        return render(request, "denied.html", who, status=403, role="csrf")
                try:
                    return await handler(request, who)
                except NotFound as err:
                    return render(request, "missing.html", who, status=404, message=str(err))

            return endpoint

        return wrap

    # --- sign-in ---------------------------------------------------------------------------------------

    async def signin(request: Request) -> Response:
        if sources.keys is None:
            return RedirectResponse("/", status_code=303)
        error = ""
        if request.method == "POST":
            form = await request.form()
            key = form.get("key")
            found = sources.keys.authenticate(key) if isinstance(key, str) and key else None
            signins = sources.metrics.console_signins
            if not csrf_ok(request, form.get("csrf")):
                error = "The form expired: sign in again."
                signins.labels("expired_form").inc()
            elif found is None:
                error = "Unknown key."
                signins.labels("unknown_key").inc()
                refused.warning(
                    "unknown",
                    "console sign-in with an unknown key from %s (counted in tailor_console_signins_total)",
                    request.client.host if request.client else "?",
                    extra={"event": "console_signin_refused"},
                )
            elif not (found.allows("observe") or found.allows("session")):
                error = f"The key {found.name!r} has no console role (observe, session or admin)."
                signins.labels("no_role").inc()
            else:
                signins.labels("ok").inc()
                import hashlib

                request.session.clear()
                request.session["key"] = hashlib.sha256(str(key).encode()).hexdigest()
                request.session["since"] = time.time()
                log.info("console sign-in by %s", found.name, extra={"event": "console_signin", "key": found.name})
                home = "/" if found.allows("observe") else "/sessions"
                target = str(request.query_params.get("next", home))
                safe = target.startswith("/") and not target.startswith("//") and "\\" not in target
                return RedirectResponse(target if safe else home, 303)
        return render(request, "signin.html", None, status=401 if error else 200, error=error)

    async def signout(request: Request) -> Response:
        form = await request.form()
        if csrf_ok(request, form.get("csrf")):
            request.session.clear()
        return RedirectResponse("/signin" if sources.keys is not None else "/", status_code=303)

    # --- pages -----------------------------------------------------------------------------------------

    @page(PAGE_ROLES["overview"])
    async def overview(request: Request, who: Viewer) -> Response:
        now = time.time()
        points = await sources.admin.decision_points()
        series = await sources.series([c.name for _, c, _ in points], now - 86400, now)
        ages = sources.model_ages()
        rows = []
        for version, catalog, model_version in points:
            name = catalog.name
            day = [b for _, b in series.window(name, now - 86400, now)] if series else []
            hour = [b for m, b in series.window(name, now - 3600, now)] if series else []
            total = summed(day)
            n = sum(total.decisions.values())
            rows.append(
                {
                    "name": name,
                    "version": version.version,
                    "actions": len(catalog.action_ids),
                    "rate": sum(sum(b.decisions.values()) for b in hour) / 3600.0,
                    "n": n,
                    "mean": sum(total.rewards.values()) / n if n else None,
                    "values": _values(total.values),
                    "model": model_version,
                    "model_age": _age(now - ages[name]) if name in ages else "",
                    "mode": catalog.policy.mode,
                    "holdout": catalog.policy.holdout_share,
                }
            )
        return render(request, "overview.html", who, rows=rows, series=series is not None)

    @page(PAGE_ROLES["point"])
    async def point(request: Request, who: Viewer) -> Response:
        name = request.path_params["name"]
        version, document = await sources.admin.get(name)
        catalog = next((c for _, c, _ in await sources.admin.decision_points() if c.name == name), None)
        if catalog is None:
            raise NotFound(f"unknown decision point {name!r}")
        hours = _hours(request)
        now = time.time()
        series = await sources.series([name], now - hours * 3600, now)
        minutes = series.window(name, now - hours * 3600, now) if series else []
        # the chart spans the window, or only the part with decisions when they began later
        start = max(now - hours * 3600, minutes[0][0] * BUCKET_SECONDS if minutes else now)
        labels, shares, per_action = _shares(minutes, start, now + BUCKET_SECONDS, catalog.action_ids)
        total = summed(b for _, b in minutes)
        values = _values(total.values)
        chart = stacked_shares(labels, shares, f"Traffic share by action, last {hours} h (learned decisions)")
        value_chart = interval_bars(
            [(label, v["value"], v["low"], v["high"]) for label, v in values.items()],
            f"Mean reward (scaled to [0, 1]) per decision, last {hours} h, 95% intervals",
        )
        actions = []
        for spec in document.get("actions", []):
            aid = spec["id"]
            n, r = total.decisions.get(aid, 0), total.rewards.get(aid, 0.0)
            actions.append(
                {
                    "id": aid,
                    "paused": bool(spec.get("paused")),
                    "active_from": spec.get("active_from") or "",
                    "active_until": spec.get("active_until") or "",
                    "n": n,
                    "share": n / max(1, sum(total.decisions.values())),
                    "mean": r / n if n else None,
                }
            )
        return render(
            request,
            "point.html",
            who,
            name=name,
            version=version,
            catalog=catalog,
            chart=chart,
            value_chart=value_chart,
            values=values,
            actions=actions,
            hours=hours,
            per_action=per_action,
            message=request.session.pop("flash", ""),
        )

    @page(PAGE_ROLES["edit"])
    async def edit(request: Request, who: Viewer) -> Response:
        name = request.path_params["name"]
        version, document = await sources.admin.get(name)
        if request.method == "GET":
            return render(request, "edit.html", who, name=name, version=version.version, form=_form_of(document))
        if not who.can("admin"):
            return render(request, "denied.html", who, status=403, role="admin")
        form = await request.form()
        fields = {k: str(v) for k, v in form.items()}
        fields["count"] = str(max(0, min(_int(fields.get("count", "0"), 0), MAX_CATALOG_ACTIONS)))  # what is drawn
        document, errors, rows = _document_from(document, fields)
        expected = _int(fields.get("expected_version", ""), version.version)
        saving = fields.get("do") == "save"
        diff, effect = "", ""
        if not errors:
            try:
                change = await sources.admin.put(document, who.name, expected, validate_only=not saving)
            except InvalidArgument as err:
                errors = list(err.violations)
            except Aborted as err:
                errors = [FieldViolation("catalog", f"{err} Reload the page to edit the current version.")]
            else:
                if saving:
                    note = f"saved as version {change.version.version}" if change.changed else "nothing changed"
                    request.session["flash"] = note
                    return RedirectResponse(f"/points/{name}", status_code=303)
                diff = change.diff or "(no change)"
                effect = change.model_effect
        errors = [FieldViolation(e.field, _plain_message(e.description)) for e in errors]
        by_row = _errors_by_row(errors, rows)
        return render(
            request,
            "edit.html",
            who,
            status=400 if errors else 200,
            name=name,
            version=expected,
            form=fields,
            errors=errors,
            by_row=by_row,
            diff=diff,
            effect=effect,
            previewed=not errors,
        )

    @page(PAGE_ROLES["pause"])
    async def pause(request: Request, who: Viewer) -> Response:
        name = request.path_params["name"]
        form = await request.form()
        version, document = await sources.admin.get(name)
        action_id, paused = str(form.get("action", "")), form.get("paused") == "true"
        actions = document.get("actions", [])
        if not any(a["id"] == action_id for a in actions):
            raise NotFound(f"{name} has no action {action_id!r}")
        for a in actions:
            if a["id"] == action_id:
                if paused:
                    a["paused"] = True
                else:
                    a.pop("paused", None)
        try:
            change = await sources.admin.put(document, who.name, version.version, validate_only=False)
        except (InvalidArgument, Aborted) as err:
            message = f"not changed: {err}"
        else:
            message = f"{action_id} {'paused' if paused else 'resumed'}: version {change.version.version}"
        request.session["flash"] = message
        return RedirectResponse(f"/points/{name}", status_code=303)

    @page(PAGE_ROLES["history"])
    async def history(request: Request, who: Viewer) -> Response:
        name = request.path_params["name"]
        versions = await sources.admin.versions(name)
        current = versions[0].version if versions else 0
        rows = []
        for i, v in enumerate(versions):
            before = versions[i + 1].document if i + 1 < len(versions) else None
            rows.append({"v": v, "diff": _diff(before, v.document), "current": v.version == current})
        return render(request, "history.html", who, name=name, rows=rows, current=current)

    @page(PAGE_ROLES["rollback"])
    async def rollback(request: Request, who: Viewer) -> Response:
        name = request.path_params["name"]
        form = await request.form()
        to = _int(str(form.get("to", "")), 0)
        expected = _int(str(form.get("expected_version", "")), 0)
        confirm = form.get("do") == "rollback"
        try:
            change = await sources.admin.rollback(name, to, who.name, expected, validate_only=not confirm)
        except Aborted as err:
            return render(
                request, "missing.html", who, status=409, message=f"{str(err).rstrip('.')}. Reload the history."
            )
        if confirm:
            request.session["flash"] = f"rolled back to version {to}: now version {change.version.version}"
            return RedirectResponse(f"/points/{name}", status_code=303)
        return render(
            request,
            "rollback.html",
            who,
            name=name,
            to=to,
            expected=expected,
            diff=change.diff or "(no change: it is the current catalog)",
            effect=change.model_effect,
        )

    @page(PAGE_ROLES["audit"])
    async def audit(request: Request, who: Viewer) -> Response:
        point_filter = str(request.query_params.get("decision_point", ""))
        events = await sources.admin.audit(point_filter, 200)
        return render(request, "audit.html", who, events=events, point_filter=point_filter)

    @page(PAGE_ROLES["session"])
    async def session(request: Request, who: Viewer) -> Response:
        session_id = str(request.query_params.get("session_id", "")).strip()
        features: list[tuple[str, str | float]] | None = None
        if session_id:
            features = await sources.sessions.features(session_id[:256], time.time())
        return render(request, "session.html", who, session_id=session_id, features=features)

    async def security_headers(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        sources.metrics.console_requests.labels(_page_of(request.url.path), str(response.status_code)).inc()
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; img-src 'self' data:; style-src 'self'; form-action 'self'; frame-ancestors 'none'"
        )
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "same-origin"
        response.headers["Cache-Control"] = "no-store"
        if sources.tls:
            response.headers["Strict-Transport-Security"] = "max-age=31536000"
        return response

    from starlette.middleware.base import BaseHTTPMiddleware

    routes = [
        Route("/", overview),
        Route("/signin", signin, methods=["GET", "POST"]),
        Route("/signout", signout, methods=["POST"]),
        Route("/points/{name}", point),
        Route("/points/{name}/edit", edit, methods=["GET", "POST"]),
        Route("/points/{name}/pause", pause, methods=["POST"]),
        Route("/points/{name}/history", history),
        Route("/points/{name}/rollback", rollback, methods=["POST"]),
        Route("/audit", audit),
        Route("/sessions", session),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    middleware = [  # outermost first: refused Host headers are counted and get the security headers too
        Middleware(BaseHTTPMiddleware, dispatch=security_headers),
        Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts),
        Middleware(
            SessionMiddleware,
            secret_key=secret.hex(),
            session_cookie="tailor_console",
            max_age=SESSION_SECONDS,
            same_site="strict",
            https_only=sources.tls,
        ),
    ]
    return Starlette(routes=routes, middleware=middleware)


# --- helpers ---------------------------------------------------------------------------------------------


_PAGES = {"": "overview", "signin": "signin", "signout": "signout", "audit": "audit", "sessions": "sessions"}


def _page_of(path: str) -> str:
    """A request's page, for the requests metric (bounded: never a decision point's name)."""
    parts = path.strip("/").split("/")
    if parts[0] == "points" and len(parts) in (2, 3):
        return parts[2] if len(parts) == 3 and parts[2] in ("edit", "pause", "history", "rollback") else "point"
    if parts[0] == "static":
        return "static"
    return _PAGES.get(parts[0], "other")


def _hours(request: Request) -> int:
    try:
        return min(168, max(1, int(str(request.query_params.get("hours", "24")))))
    except ValueError:
        return 24


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _values(counters: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    """Each policy's mean reward per decision with its 95% interval, from summed IPS counters."""
    out = {}
    for policy, label in (("live", "live policy"), ("uniform", "uniform random"), ("baseline", "baseline action")):
        c = counters.get(policy)
        if c is None or c[0] < 2:
            continue
        e = mean_interval(c[0], c[1], c[2])
        out[label] = {"value": e.value, "low": max(0.0, e.low), "high": e.high, "n": e.n}
    return out


def _shares(
    minutes: list[tuple[int, Any]], since: float, until: float, action_ids: tuple[str, ...]
) -> tuple[list[str], dict[str, list[float]], list[str]]:
    """The window cut into POINTS_SHOWN slots: per action, decisions per slot (for the stacked share chart)."""
    slots = max(2, min(POINTS_SHOWN, int((until - since) // BUCKET_SECONDS)))
    width = (until - since) / slots
    seen = [a for a in action_ids] + sorted({a for _, b in minutes for a in b.decisions} - set(action_ids))
    series = {a: [0.0] * slots for a in seen}
    for minute, bucket in minutes:
        i = min(slots - 1, max(0, int((minute * BUCKET_SECONDS - since) / width)))
        for a, n in bucket.decisions.items():
            series[a][i] += n
    # slots without learned decisions have no share to show: they are left out, not drawn as 0%
    kept = [i for i in range(slots) if any(series[a][i] for a in series)]
    used = {a: [v[i] for i in kept] for a, v in series.items() if any(v)}
    labels = [datetime.fromtimestamp(since + width * i, UTC).strftime("%d %b %H:%M") for i in kept]
    return labels, used, list(used)


def _diff(before: dict[str, Any] | None, after: dict[str, Any] | None) -> str:
    from server.state.catalogs import catalog_diff

    return catalog_diff(before, after)


def _text(mapping: dict[str, Any]) -> str:
    """Features as `name: value` lines that read back as the same values (text that looks like a number, `on` or
    `0123`, is quoted)."""
    return "".join(yaml.safe_dump({k: v}, default_flow_style=False, allow_unicode=True) for k, v in mapping.items())


def _payload_text(mapping: dict[str, Any]) -> str:
    return "".join(f"{k}: {v}\n" for k, v in mapping.items())  # read back as text by `_pairs`


def _form_of(document: dict[str, Any]) -> dict[str, str]:
    """The editor's fields for a catalog: per action its schedule, pause, features and payload; a few policy keys."""
    fields: dict[str, str] = {}
    for i, a in enumerate(document.get("actions", [])):
        fields[f"a{i}.id"] = a["id"]
        fields[f"a{i}.features"] = _text(a.get("features", {}))
        fields[f"a{i}.payload"] = _payload_text(a.get("payload", {}))
        fields[f"a{i}.active_from"] = a.get("active_from") or ""
        fields[f"a{i}.active_until"] = a.get("active_until") or ""
        if a.get("paused"):
            fields[f"a{i}.paused"] = "on"
    policy = document.get("policy", {})
    for key in ("reward_window_seconds", "holdout_share", "apprentice_exploration", "baseline_action", "mode"):
        if key in policy and policy[key] is not None:
            fields[f"policy.{key}"] = str(policy[key])
    fields["count"] = str(len(document.get("actions", [])))
    return fields


def _mapping(text: str, where: str, errors: list[FieldViolation]) -> dict[str, Any]:
    """`key: value` lines as a mapping (YAML's rules: numbers stay numbers)."""
    if not text.strip():
        return {}
    if len(text) > MAX_FIELD_CHARS:
        errors.append(FieldViolation(where, f"at most {MAX_FIELD_CHARS} characters"))
        return {}
    try:
        value = yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError):
        errors.append(FieldViolation(where, "write one `name: value` per line"))
        return {}
    if not isinstance(value, dict):
        errors.append(FieldViolation(where, "write one `name: value` per line"))
        return {}
    return {str(k): v for k, v in value.items()}


def _document_from(
    current: dict[str, Any], fields: dict[str, str]
) -> tuple[dict[str, Any], list[FieldViolation], list[str]]:
    """The catalog the form describes (the current one with the form's actions and policy keys), the form's own
    errors, and the form row of each action in the catalog (`a0`..., `new`), to put validation errors by their row."""
    errors: list[FieldViolation] = []
    rows_of: list[str] = []
    doc = {k: v for k, v in current.items() if k not in ("actions", "policy")}
    policy = dict(current.get("policy", {}))
    for key in ("reward_window_seconds", "holdout_share", "apprentice_exploration"):
        value = fields.get(f"policy.{key}", "").strip()
        if value:
            policy[key] = _number(value)
        else:
            policy.pop(key, None)
    for key in ("baseline_action", "mode"):
        value = fields.get(f"policy.{key}", "").strip()
        if value:
            policy[key] = value
        else:
            policy.pop(key, None)
    if policy:
        doc["policy"] = policy
    actions: list[dict[str, Any]] = []
    count = max(0, min(_int(fields.get("count", "0"), 0), MAX_CATALOG_ACTIONS))
    for prefix in [f"a{i}" for i in range(count)] + ["new"]:
        action_id = fields.get(f"{prefix}.id", "").strip()
        if prefix == "new" and not action_id:
            continue
        if fields.get(f"{prefix}.remove") == "on":
            continue
        position = len(actions)
        rows_of.append(prefix)
        action: dict[str, Any] = {"id": action_id}
        features = _mapping(fields.get(f"{prefix}.features", ""), f"catalog.actions.{position}.features", errors)
        payload = _pairs(fields.get(f"{prefix}.payload", ""), f"catalog.actions.{position}.payload", errors)
        if features:
            action["features"] = features
        if payload:
            action["payload"] = payload
        for key in ("active_from", "active_until"):
            value = fields.get(f"{prefix}.{key}", "").strip()
            if value:
                action[key] = value
        if fields.get(f"{prefix}.paused") == "on":
            action["paused"] = True
        actions.append(action)
    doc["actions"] = actions
    return doc, errors, rows_of


def _pairs(text: str, where: str, errors: list[FieldViolation]) -> dict[str, str]:
    """`key: value` lines as text (a payload is text: `code: 007` stays `007`)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        key, colon, value = line.partition(":")
        if not colon or not key.strip():
            errors.append(FieldViolation(where, f"write one `name: value` per line, not {line.strip()[:40]!r}"))
            continue
        out[key.strip()] = value.strip()
    return out


def _number(text: str) -> float | str:
    try:
        value = float(text)
    except ValueError:
        return text  # validation names it
    return value if math.isfinite(value) else text


def _errors_by_row(errors: list[FieldViolation], rows: list[str]) -> dict[str, list[str]]:
    """Violations by the form row they belong to (`a3`, `new`, `policy`, or `catalog`); `rows[i]` is the row of the
    catalog's i-th action."""
    out: dict[str, list[str]] = {}
    for e in errors:
        parts = e.field.split(".")
        if len(parts) >= 3 and parts[1] == "actions" and parts[2].isdigit() and int(parts[2]) < len(rows):
            row = rows[int(parts[2])]
        elif len(parts) >= 2 and parts[1] == "policy":
            row = "policy"
        else:
            row = "catalog"
        out.setdefault(row, []).append(f"{'.'.join(parts[1:]) or e.field}: {_plain_message(e.description)}")
    return out


def _int(text: str, default: int) -> int:
    try:
        return int(text)
    except ValueError:
        return default


def _plain_message(text: str) -> str:
    """A validation message without pydantic's "Value error, " prefix."""
    return text.removeprefix("Value error, ")
