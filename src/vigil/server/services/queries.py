"""Read side: tenant-scoped lists with filters and cursor pagination, and live queries."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from vigil.errors import Conflict, InvalidInput, NotFound
from vigil.server.db.models import (
    VM,
    Alert,
    AuditRecord,
    Event,
    Host,
    Incident,
    InventoryItem,
    Sensor,
    Task,
    Tenant,
    utcnow,
)
from vigil.server.services.audit import audit
from vigil.server.services.auth import QUERY_ROLES, Principal

MAX_LIMIT = 1000
INVENTORY_KINDS = ("processes", "connections", "listening", "services", "packages", "users")


@dataclass
class Page:
    items: Sequence[Any]
    next_cursor: str | None


def encode_cursor(value: int) -> str:
    return base64.urlsafe_b64encode(str(value).encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int | None:
    if not cursor:
        return None
    try:
        return int(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode())
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidInput("invalid cursor: use the next_cursor of a previous page") from None


def paginate(session: Session, stmt: Select[Any], id_col: Any, *, limit: int,
             cursor: str | None) -> Page:
    """Newest first; the cursor is the last id of the previous page."""
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit must be between 1 and {MAX_LIMIT}")
    after = decode_cursor(cursor)
    if after is not None:
        stmt = stmt.where(id_col < after)
    rows = session.scalars(stmt.order_by(id_col.desc()).limit(limit + 1)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, encode_cursor(_id_of(rows[-1])) if more and rows else None)


def _id_of(row: Any) -> int:
    return row.seq if isinstance(row, Event) else row.id


def iterate(session: Session, stmt: Select[Any], id_col: Any, chunk: int = 1000) -> Iterator[Any]:
    """Every row of a query, newest first, a page at a time (for CSV streaming)."""
    cursor = None
    while True:
        page = paginate(session, stmt, id_col, limit=chunk, cursor=cursor)
        yield from page.items
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


def scoped(stmt: Select[Any], principal: Principal, tenant_col: Any) -> Select[Any]:
    if principal.tenant_id is not None:
        stmt = stmt.where(tenant_col == principal.tenant_id)
    return stmt


# --- status ------------------------------------------------------------------------------------


def sensor_status(sensor: Sensor, *, now: datetime, offline_after_beats: int) -> str:
    if sensor.revoked_at is not None:
        return "revoked"
    if sensor.last_seen_at is None:
        return "never seen"
    if sensor.stopped_at is not None:
        return "stopped"
    grace = timedelta(seconds=sensor.heartbeat_interval * offline_after_beats)
    return "online" if now - sensor.last_seen_at <= grace else "offline"


def sensors_by_vm(session: Session, vm_ids: Sequence[int]) -> dict[int, list[Sensor]]:
    out: dict[int, list[Sensor]] = {}
    if vm_ids:
        for s in session.scalars(select(Sensor).where(Sensor.vm_id.in_(vm_ids))):
            out.setdefault(s.vm_id or 0, []).append(s)
    return out


def vm_status(sensors: list[Sensor], *, now: datetime, offline_after_beats: int) -> str:
    states = [sensor_status(s, now=now, offline_after_beats=offline_after_beats) for s in sensors]
    if "online" in states:
        return "online"
    return "offline" if states else "no sensor"


# --- lists ---------------------------------------------------------------------------------


def hosts_query(principal: Principal) -> Select[Any]:
    return scoped(select(Host), principal, Host.tenant_id)


def vms_query(principal: Principal, *, host_id: int | None = None) -> Select[Any]:
    stmt = scoped(select(VM), principal, VM.tenant_id)
    if host_id is not None:
        stmt = stmt.where(VM.host_id == host_id)
    return stmt


def sensors_query(principal: Principal, *, vm_id: int | None = None) -> Select[Any]:
    stmt = scoped(select(Sensor), principal, Sensor.tenant_id)
    if vm_id is not None:
        stmt = stmt.where(Sensor.vm_id == vm_id)
    return stmt


def events_query(
    principal: Principal, *, vm_id: int | None = None, kind: str | None = None,
    since: datetime | None = None, until: datetime | None = None, src_ip: str | None = None,
    user: str | None = None,
) -> Select[Any]:
    stmt = scoped(select(Event), principal, Event.tenant_id)
    if vm_id is not None:
        stmt = stmt.where(Event.vm_id == vm_id)
    if kind:
        stmt = stmt.where(Event.kind == kind)
    if since:
        stmt = stmt.where(Event.observed_at >= since)
    if until:
        stmt = stmt.where(Event.observed_at < until)
    if src_ip:
        stmt = stmt.where(Event.src_ip == src_ip)
    if user:
        stmt = stmt.where(Event.username == user)
    return stmt


def alerts_query(
    principal: Principal, *, vm_id: int | None = None, severity: str | None = None,
    since: datetime | None = None, incident_id: int | None = None, rule_id: str | None = None,
    status: str | None = None,
) -> Select[Any]:
    stmt = scoped(select(Alert), principal, Alert.tenant_id)
    if rule_id:
        stmt = stmt.where(Alert.rule_id == rule_id)
    if status:
        stmt = stmt.where(Alert.status == status)
    if vm_id is not None:
        stmt = stmt.where(Alert.vm_id == vm_id)
    if severity:
        stmt = stmt.where(Alert.severity == severity)
    if since:
        stmt = stmt.where(Alert.detected_at >= since)
    if incident_id is not None:
        stmt = stmt.where(Alert.incident_id == incident_id)
    return stmt


def incidents_query(principal: Principal, *, vm_id: int | None = None,
                    status: str | None = None, severity: str | None = None,
                    since: datetime | None = None) -> Select[Any]:
    """Incidents; ``since`` is their last activity."""
    stmt = scoped(select(Incident), principal, Incident.tenant_id)
    if severity:
        stmt = stmt.where(Incident.severity == severity)
    if since is not None:
        stmt = stmt.where(Incident.last_seen >= since)
    if vm_id is not None:
        stmt = stmt.where(Incident.vm_id == vm_id)
    if status:
        stmt = stmt.where(Incident.status == status)
    return stmt


def audit_query(principal: Principal, *, action: str | None = None) -> Select[Any]:
    principal.require({"admin"}, "read the audit log")
    stmt = select(AuditRecord)
    if action:
        stmt = stmt.where(AuditRecord.action == action)
    return stmt


def inventory_query(vm: VM, kind: str, *, history: bool = False,
                    since: datetime | None = None) -> Select[Any]:
    if kind not in INVENTORY_KINDS:
        raise NotFound(f"no inventory {kind!r}: choose one of {', '.join(INVENTORY_KINDS)}")
    stmt = select(InventoryItem).where(InventoryItem.vm_id == vm.id, InventoryItem.kind == kind)
    if not history:
        stmt = stmt.where(InventoryItem.removed_at.is_(None))
    if since is not None:
        stmt = stmt.where(InventoryItem.first_seen >= since)
    return stmt


def get_scoped(session: Session, principal: Principal, model: Any, ident: Any) -> Any:
    """A record by id, or not found when it is another tenant's (no existence leak)."""
    row = session.get(model, ident)
    if row is None:
        raise NotFound(f"no {model.__tablename__[:-1]} {ident}")
    principal.check_tenant(row.tenant_id)
    return row


def tenant_names(session: Session) -> dict[int, str]:
    return dict(session.execute(select(Tenant.id, Tenant.name)).tuples().all())


def dashboard_counts(session: Session, principal: Principal) -> dict[str, int]:
    def count(model: Any) -> int:
        return session.scalar(scoped(select(func.count()).select_from(model), principal,
                                     model.tenant_id)) or 0

    return {"hosts": count(Host), "vms": count(VM), "events": count(Event),
            "alerts": count(Alert), "incidents": count(Incident)}


# --- live queries ------------------------------------------------------------------------------


def request_live_query(session: Session, *, principal: Principal, vm_id: int,
                       offline_after_beats: int) -> Task:
    """Queue a ``live_query`` for the VM's guest sensor; it is handed out with the next beat."""
    principal.require(QUERY_ROLES, "run live queries")
    vm = get_scoped(session, principal, VM, vm_id)
    now = utcnow()
    sensors = [s for s in sensors_by_vm(session, [vm.id]).get(vm.id, []) if s.kind == "guest"]
    live = [s for s in sensors
            if sensor_status(s, now=now, offline_after_beats=offline_after_beats) == "online"]
    if not live:
        raise Conflict("no guest sensor of this VM is online: a live query needs one")
    sensor = max(live, key=lambda s: s.last_seen_at or now)
    task = Task(tenant_id=vm.tenant_id, sensor_id=sensor.id, vm_id=vm.id, kind="live_query",
                params={"what": ["processes", "connections"]}, created_by=principal.user_id)
    session.add(task)
    session.flush()
    audit(session, actor=principal.actor, action="vm.live_query", target_type="vm",
          target_id=vm.id, tenant_id=vm.tenant_id, detail={"task_id": task.id})
    return task
