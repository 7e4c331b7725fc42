"""Security events, alerts, incidents and the audit log."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter

from vigil.server.api.deps import Cursor, Db, Format, Limit, User, list_response
from vigil.server.api.schemas import (
    AlertPublic,
    AuditPublic,
    EventPublic,
    IncidentPublic,
    PageOf,
)
from vigil.server.db.models import Alert, AuditRecord, Event, Incident
from vigil.server.services import queries

router = APIRouter(prefix="/api/v1", tags=["events"])


@router.get("/events", response_model=PageOf[EventPublic])
def list_events(user: User, db: Db, vm_id: int | None = None, kind: str | None = None,
                since: datetime | None = None, until: datetime | None = None,
                src_ip: str | None = None, username: str | None = None, limit: Limit = 100,
                cursor: Cursor = None, format: Format = "json") -> Any:
    """Security events (auth log lines, persistence changes, log tampering), newest first."""
    stmt = queries.events_query(user, vm_id=vm_id, kind=kind, since=since, until=until,
                                src_ip=src_ip, user=username)
    return list_response(db, stmt, Event.seq, EventPublic, fmt=format, limit=limit,
                         cursor=cursor, filename="events", principal=user)


@router.get("/events/{seq}")
def get_event(seq: int, user: User, db: Db) -> EventPublic:
    with db.read() as session:
        return EventPublic.model_validate(queries.get_scoped(session, user, Event, seq))


@router.get("/alerts", response_model=PageOf[AlertPublic])
def list_alerts(user: User, db: Db, vm_id: int | None = None, severity: str | None = None,
                since: datetime | None = None, incident_id: int | None = None,
                limit: Limit = 100, cursor: Cursor = None, format: Format = "json") -> Any:
    """Alerts raised by the detection rules, newest first."""
    stmt = queries.alerts_query(user, vm_id=vm_id, severity=severity, since=since,
                                incident_id=incident_id)
    return list_response(db, stmt, Alert.id, AlertPublic, fmt=format, limit=limit,
                         cursor=cursor, filename="alerts", principal=user)


@router.get("/alerts/{alert_id}")
def get_alert(alert_id: int, user: User, db: Db) -> AlertPublic:
    with db.read() as session:
        return AlertPublic.model_validate(queries.get_scoped(session, user, Alert, alert_id))


@router.get("/incidents", response_model=PageOf[IncidentPublic])
def list_incidents(user: User, db: Db, vm_id: int | None = None, status: str | None = None,
                   limit: Limit = 100, cursor: Cursor = None, format: Format = "json") -> Any:
    """Incidents: alerts on one VM correlated in time."""
    return list_response(db, queries.incidents_query(user, vm_id=vm_id, status=status),
                         Incident.id, IncidentPublic, fmt=format, limit=limit, cursor=cursor,
                         filename="incidents", principal=user)


@router.get("/incidents/{incident_id}")
def get_incident(incident_id: int, user: User, db: Db) -> IncidentPublic:
    with db.read() as session:
        return IncidentPublic.model_validate(
            queries.get_scoped(session, user, Incident, incident_id))


@router.get("/audit", response_model=PageOf[AuditPublic])
def list_audit(user: User, db: Db, action: str | None = None, limit: Limit = 100,
               cursor: Cursor = None, format: Format = "json") -> Any:
    """The audit log (admins only): every user and sensor action, hash-chained."""
    return list_response(db, queries.audit_query(user, action=action), AuditRecord.id,
                         AuditPublic, fmt=format, limit=limit, cursor=cursor, filename="audit",
                         principal=user)
