"""Server-rendered portal pages: login, dashboard, VM page, alerts and incidents.

Autoescaped Jinja2 templates; the queries behind the alert and incident pages live in
:mod:`vigil.server.portal.pages`. Changes are plain form posts carrying the CSRF token, answered
with a redirect (POST-redirect-GET).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy import func, select

from vigil.errors import AuthError, Forbidden, InvalidInput
from vigil.server.api.deps import SESSION_COOKIE, Db, client_ip, get_settings
from vigil.server.db.models import VM, Alert, Event, Host, Incident, Sensor, utcnow
from vigil.server.detect.attack import TECHNIQUES
from vigil.server.portal import pages
from vigil.server.security import constant_time_equal, csrf_token
from vigil.server.services import alerts, auth, queries
from vigil.server.services.audit import Actor, audit
from vigil.server.services.auth import Principal

router = APIRouter(include_in_schema=False)

#: how the VM page sorts each inventory table
_ORDER: dict[str, Any] = {
    "processes": lambda d: d.get("pid") or 0,
    "connections": lambda d: (d.get("proto", ""), d.get("lport") or 0, d.get("rport") or 0),
    "listening": lambda d: (d.get("proto", ""), d.get("port") or 0),
    "users": lambda d: d.get("name", ""),
}
templates = Jinja2Templates(directory=str(Path(__file__).with_name("templates")))
templates.env.filters["technique"] = pages.technique_info
templates.env.filters["tactic"] = pages.tactic_name


def _portal_user(request: Request) -> tuple[Principal, str]:
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        raise AuthError("not logged in")
    with request.app.state.db.read() as session:
        principal = auth.principal_for_session(session, token=cookie, client_ip=client_ip(request))
    return principal, csrf_token(get_settings(request).secret_key, cookie)


def _render(request: Request, name: str, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, name, context)


def _require_csrf(request: Request, sent: str) -> Principal:
    """The session's user, if the form carried the session's CSRF token."""
    principal, expected = _portal_user(request)
    if not constant_time_equal(sent, expected):
        raise Forbidden("wrong CSRF token: reload the page")
    return principal


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request) -> HTMLResponse:
    return _render(request, "login.html", error=None)


@router.post("/login")
def login(request: Request, db: Db, email: str = Form(...), password: str = Form(...)) -> Response:
    settings = get_settings(request)
    try:
        with db.write() as session:
            _, token = auth.login(session, email=email, password=password,
                                  client_ip=client_ip(request), hours=settings.session_hours)
    except AuthError as exc:
        # the failed attempt was audited in its own transaction before the error
        with db.write() as session:
            audit(session, actor=Actor("user", email[:254], None, client_ip(request)),
                  action="auth.login", outcome="failure")
        page = _render(request, "login.html", error=exc.message)
        page.status_code = 401
        return page
    resp = RedirectResponse("/", status_code=303)
    resp.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="strict",
                    secure=settings.cookie_secure, max_age=int(settings.session_hours * 3600))
    return resp


@router.post("/logout")
def logout(request: Request, db: Db, csrf: str = Form("")) -> Response:
    principal = _require_csrf(request, csrf)
    with db.write() as session:
        auth.logout(session, token=request.cookies[SESSION_COOKIE], principal=principal)
    resp = RedirectResponse("/login", status_code=303)
    resp.delete_cookie(SESSION_COOKIE)
    return resp


@router.get("/", response_class=HTMLResponse)
def dashboard(request: Request, db: Db) -> HTMLResponse:
    principal, csrf = _portal_user(request)
    beats = get_settings(request).offline_after_beats
    now = utcnow()
    with db.read() as session:
        hosts = session.scalars(queries.hosts_query(principal).order_by(Host.name).limit(200)).all()
        vms = session.scalars(queries.vms_query(principal).order_by(VM.id.desc()).limit(200)).all()
        by_vm = queries.sensors_by_vm(session, [v.id for v in vms])
        vm_rows = [
            {"vm": vm, "status": queries.vm_status(by_vm.get(vm.id, []), now=now,
                                                    offline_after_beats=beats),
             "sensors": by_vm.get(vm.id, []),
             "last_seen": max((s.last_seen_at for s in by_vm.get(vm.id, []) if s.last_seen_at),
                              default=None)}
            for vm in vms
        ]
        host_names = {h.id: h.name for h in hosts}
        events = session.scalars(
            queries.events_query(principal).order_by(Event.seq.desc()).limit(20)).all()
        latest = pages.recent_alerts(session, principal, limit=20)
        counts = queries.dashboard_counts(session, principal)
        online = sum(1 for r in vm_rows if r["status"] == "online")
        host_sensors = session.scalars(
            queries.sensors_query(principal).where(Sensor.kind == "host")).all()
        open_counts = pages.open_alert_counts(session, principal)
        incidents = pages.active_incidents(session, principal)
    return _render(request, "dashboard.html", user=principal, csrf=csrf, hosts=hosts,
                   vm_rows=vm_rows, host_names=host_names, events=events, alerts=latest,
                   counts=counts, online=online, host_sensors=host_sensors,
                   open_counts=open_counts, incidents=incidents,
                   vm_names={r["vm"].id: r["vm"].name for r in vm_rows})


@router.get("/vms/{vm_id}", response_class=HTMLResponse)
def vm_page(vm_id: int, request: Request, db: Db) -> HTMLResponse:
    principal, csrf = _portal_user(request)
    beats = get_settings(request).offline_after_beats
    now = utcnow()
    with db.read() as session:
        vm = queries.get_scoped(session, principal, VM, vm_id)
        sensors = queries.sensors_by_vm(session, [vm.id]).get(vm.id, [])
        status = queries.vm_status(sensors, now=now, offline_after_beats=beats)
        sensor_rows = [(s, queries.sensor_status(s, now=now, offline_after_beats=beats))
                       for s in sensors]
        inventory = {
            kind: sorted((row.data for row in session.scalars(
                queries.inventory_query(vm, kind).limit(5000))), key=_ORDER[kind])
            for kind in _ORDER
        }
        events = session.scalars(
            queries.events_query(principal, vm_id=vm.id).order_by(Event.seq.desc()).limit(50)
        ).all()
        host = session.get(Host, vm.host_id) if vm.host_id else None
        counts = {
            kind: session.scalar(select(func.count()).select_from(
                queries.inventory_query(vm, kind).subquery())) or 0
            for kind in queries.INVENTORY_KINDS
        }
        vm_alerts = pages.recent_alerts(session, principal, vm_id=vm.id, limit=20)
    return _render(request, "vm.html", user=principal, csrf=csrf, vm=vm, host=host,
                   status=status, sensors=sensor_rows, inventory=inventory, events=events,
                   counts=counts, alerts=vm_alerts, vm_names={vm.id: vm.name})


# --- alerts --------------------------------------------------------------------------------

PageSize = Annotated[int, Query(ge=1, le=500, description="rows per page")]


def _with_limit(query: dict[str, str], limit: int) -> dict[str, str]:
    return {**query, "limit": str(limit)} if limit != pages.PAGE_SIZE else query


@router.get("/alerts", response_class=HTMLResponse)
def alerts_page(request: Request, db: Db, severity: str | None = None,
                technique: str | None = None, vm_id: str | None = None,
                status: str | None = None, since: str | None = None,
                cursor: Annotated[str | None, Query(max_length=64)] = None,
                limit: PageSize = pages.PAGE_SIZE) -> HTMLResponse:
    """Alerts, newest first, filtered like ``GET /api/v1/alerts``, a page at a time."""
    principal, csrf = _portal_user(request)
    form = {"severity": severity or "", "technique": technique or "", "vm_id": vm_id or "",
            "status": status or "", "since": since or ""}
    error, items, next_url, query = None, [], None, {}
    with db.read() as session:
        names = pages.vm_names(session, principal)
        try:
            filters = pages.AlertFilters.parse(**form)
            query = _with_limit(filters.query(), limit)
            page = pages.alert_page(session, principal, filters, cursor=cursor, limit=limit)
            items, next_url = list(page.items), pages.page_link("/alerts", query, page.next_cursor)
        except InvalidInput as exc:
            error = exc.message
    resp = _render(request, "alerts.html", user=principal, csrf=csrf, alerts=items, form=form,
                   error=error, next_url=next_url, vm_names=names,
                   first_url=f"/alerts?{urlencode(query)}" if cursor else None,
                   csv_query=urlencode({**query, "format": "csv"}),
                   severities=pages.SEVERITIES, statuses=pages.ALERT_STATUSES,
                   techniques=TECHNIQUES)
    if error:
        resp.status_code = 422
    return resp


@router.get("/alerts/{alert_id}", response_class=HTMLResponse)
def alert_page(alert_id: int, request: Request, db: Db) -> HTMLResponse:
    """One alert: its rule, techniques, controls, reason, evidence, incident and status."""
    principal, csrf = _portal_user(request)
    with db.read() as session:
        alert = queries.get_scoped(session, principal, Alert, alert_id)
        vm = queries.get_scoped(session, principal, VM, alert.vm_id) if alert.vm_id else None
        incident = (queries.get_scoped(session, principal, Incident, alert.incident_id)
                    if alert.incident_id else None)
    rule = next((r for r in alerts.rule_catalogue() if r["id"] == alert.rule_id), None)
    return _render(request, "alert.html", user=principal, csrf=csrf, alert=alert, vm=vm,
                   incident=incident, rule=rule,
                   techniques=[pages.technique_info(t) for t in alert.techniques],
                   tactic=pages.tactic_name(alert.tactic),
                   evidence=pages.evidence_sections(alert.evidence),
                   can_change=principal.role in alerts.ANALYSTS,
                   statuses=pages.ALERT_STATUSES, labels=pages.ALERT_STATUS_LABELS)


@router.post("/alerts/{alert_id}/status")
def alert_status(alert_id: int, request: Request, db: Db, csrf: str = Form(""),
                 status: str = Form("")) -> Response:
    """Acknowledge, close, reopen or mark an alert a false positive (audited), then show it."""
    principal = _require_csrf(request, csrf)
    new = pages.parse_status("alert status", status, pages.ALERT_STATUSES)
    with db.write() as session:
        alerts.set_alert_status(session, principal, alert_id, new)
    return RedirectResponse(f"/alerts/{alert_id}", status_code=303)


# --- incidents -----------------------------------------------------------------------------


@router.get("/incidents", response_class=HTMLResponse)
def incidents_page(request: Request, db: Db, severity: str | None = None,
                   vm_id: str | None = None, status: str | None = None,
                   cursor: Annotated[str | None, Query(max_length=64)] = None,
                   limit: PageSize = pages.PAGE_SIZE) -> HTMLResponse:
    """Incidents, newest first, filtered by severity, VM and status, a page at a time."""
    principal, csrf = _portal_user(request)
    form = {"severity": severity or "", "vm_id": vm_id or "", "status": status or ""}
    error, items, next_url, query = None, [], None, {}
    with db.read() as session:
        names = pages.vm_names(session, principal)
        try:
            filters = pages.IncidentFilters.parse(**form)
            query = _with_limit(filters.query(), limit)
            page = pages.incident_page(session, principal, filters, cursor=cursor, limit=limit)
            items = list(page.items)
            next_url = pages.page_link("/incidents", query, page.next_cursor)
        except InvalidInput as exc:
            error = exc.message
    resp = _render(request, "incidents.html", user=principal, csrf=csrf, incidents=items,
                   form=form, error=error, next_url=next_url, vm_names=names,
                   first_url=f"/incidents?{urlencode(query)}" if cursor else None,
                   csv_query=urlencode({**query, "format": "csv"}),
                   severities=pages.SEVERITIES, statuses=pages.INCIDENT_STATUSES)
    if error:
        resp.status_code = 422
    return resp


@router.get("/incidents/{incident_id}", response_class=HTMLResponse)
def incident_page(incident_id: int, request: Request, db: Db) -> HTMLResponse:
    """One incident: kill chain, techniques, sources, its alerts and the merged timeline."""
    principal, csrf = _portal_user(request)
    with db.read() as session:
        found = alerts.incident_detail(session, principal, incident_id)
    incident = found["incident"]
    return _render(request, "incident.html", user=principal, csrf=csrf, incident=incident,
                   vm_name=found["vm_name"], alerts=found["alerts"],
                   timeline=pages.timeline_rows(found["timeline"]),
                   kill_chain=pages.kill_chain(incident.tactics),
                   techniques=[pages.technique_info(t) for t in incident.techniques],
                   vm_names={incident.vm_id: found["vm_name"]} if incident.vm_id else {},
                   can_change=principal.role in alerts.ANALYSTS,
                   statuses=pages.INCIDENT_STATUSES)


@router.post("/incidents/{incident_id}/status")
def incident_status(incident_id: int, request: Request, db: Db, csrf: str = Form(""),
                    status: str = Form("")) -> Response:
    """Move an incident through open → investigating → contained → closed (audited)."""
    principal = _require_csrf(request, csrf)
    new = pages.parse_status("incident status", status, pages.INCIDENT_STATUSES)
    with db.write() as session:
        alerts.set_incident_status(session, principal, incident_id, new)
    return RedirectResponse(f"/incidents/{incident_id}", status_code=303)
