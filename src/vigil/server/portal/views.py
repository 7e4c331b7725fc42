"""Server-rendered portal pages: login, dashboard, VM page. Autoescaped Jinja2 templates."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy import func, select

from vigil.errors import AuthError, Forbidden
from vigil.server.api.deps import SESSION_COOKIE, Db, client_ip, get_settings
from vigil.server.db.models import VM, Alert, Event, Host, Sensor, utcnow
from vigil.server.security import constant_time_equal, csrf_token
from vigil.server.services import auth, queries
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


def _portal_user(request: Request) -> tuple[Principal, str]:
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        raise AuthError("not logged in")
    with request.app.state.db.read() as session:
        principal = auth.principal_for_session(session, token=cookie, client_ip=client_ip(request))
    return principal, csrf_token(get_settings(request).secret_key, cookie)


def _render(request: Request, name: str, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, name, context)


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
    principal, expected = _portal_user(request)
    if not constant_time_equal(csrf, expected):
        raise Forbidden("wrong CSRF token: reload the page")
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
        alerts = session.scalars(
            queries.alerts_query(principal).order_by(Alert.id.desc()).limit(20)).all()
        counts = queries.dashboard_counts(session, principal)
        online = sum(1 for r in vm_rows if r["status"] == "online")
        host_sensors = session.scalars(
            queries.sensors_query(principal).where(Sensor.kind == "host")).all()
    return _render(request, "dashboard.html", user=principal, csrf=csrf, hosts=hosts,
                   vm_rows=vm_rows, host_names=host_names, events=events, alerts=alerts,
                   counts=counts, online=online, host_sensors=host_sensors)


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
    return _render(request, "vm.html", user=principal, csrf=csrf, vm=vm, host=host,
                   status=status, sensors=sensor_rows, inventory=inventory, events=events,
                   counts=counts)
