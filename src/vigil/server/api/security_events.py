"""Security events, detection rules, alerts, incidents and the audit log."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter

from vigil.server.api.deps import Cursor, Db, Format, Limit, User, list_response
from vigil.server.api.schemas import (
    AlertPublic,
    AlertUpdate,
    AuditPublic,
    EventPublic,
    IncidentDetail,
    IncidentPublic,
    IncidentUpdate,
    PageOf,
    RulePublic,
)
from vigil.server.db.models import Alert, AuditRecord, Event, Incident
from vigil.server.services import alerts, queries

Severity = Literal["info", "low", "medium", "high", "critical"]

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


@router.get("/rules")
def list_rules(user: User) -> list[RulePublic]:
    """The detection rules: ATT&CK techniques, severity, NIST SP 800-53 controls, evidence."""
    return [RulePublic.model_validate(rule) for rule in alerts.rule_catalogue()]


@router.get("/alerts", response_model=PageOf[AlertPublic])
def list_alerts(user: User, db: Db, vm_id: int | None = None, severity: Severity | None = None,
                technique: str | None = None, rule_id: str | None = None,
                status: str | None = None, since: datetime | None = None,
                incident_id: int | None = None, limit: Limit = 100, cursor: Cursor = None,
                format: Format = "json") -> Any:
    """Alerts raised by the detection rules, newest first. ``technique`` matches sub-techniques
    too (T1110 finds T1110.001); ``since`` is the detection time."""
    stmt = queries.alerts_query(user, vm_id=vm_id, severity=severity, since=since,
                                incident_id=incident_id, rule_id=rule_id, status=status)
    if technique:
        stmt = alerts.technique_filter(stmt, technique)
    return list_response(db, stmt, Alert.id, AlertPublic, fmt=format, limit=limit,
                         cursor=cursor, filename="alerts", principal=user)


@router.get("/alerts/{alert_id}")
def get_alert(alert_id: int, user: User, db: Db) -> AlertPublic:
    with db.read() as session:
        return AlertPublic.model_validate(queries.get_scoped(session, user, Alert, alert_id))


@router.patch("/alerts/{alert_id}")
def update_alert(alert_id: int, change: AlertUpdate, user: User, db: Db) -> AlertPublic:
    """Acknowledge, close or mark an alert a false positive (admin, csp, cirt; audited)."""
    with db.write() as session:
        return AlertPublic.model_validate(
            alerts.set_alert_status(session, user, alert_id, change.status))


@router.get("/incidents", response_model=PageOf[IncidentPublic])
def list_incidents(user: User, db: Db, vm_id: int | None = None, status: str | None = None,
                   severity: Severity | None = None, since: datetime | None = None,
                   limit: Limit = 100, cursor: Cursor = None, format: Format = "json") -> Any:
    """Incidents: alerts on one VM correlated in time, newest first (``since``: last activity)."""
    stmt = queries.incidents_query(user, vm_id=vm_id, status=status, severity=severity,
                                   since=since)
    return list_response(db, stmt, Incident.id, IncidentPublic, fmt=format, limit=limit,
                         cursor=cursor, filename="incidents", principal=user)


@router.get("/incidents/{incident_id}")
def get_incident(incident_id: int, user: User, db: Db) -> IncidentDetail:
    """One incident with its alerts and a timeline of alerts and the events they cite."""
    with db.read() as session:
        found = alerts.incident_detail(session, user, incident_id)
        return IncidentDetail.model_validate({
            **IncidentPublic.model_validate(found["incident"]).model_dump(),
            "vm_name": found["vm_name"],
            "alerts": [AlertPublic.model_validate(a) for a in found["alerts"]],
            "timeline": found["timeline"],
        })


@router.patch("/incidents/{incident_id}")
def update_incident(incident_id: int, change: IncidentUpdate, user: User,
                    db: Db) -> IncidentPublic:
    """Move an incident through open → investigating → contained → closed (audited)."""
    with db.write() as session:
        return IncidentPublic.model_validate(
            alerts.set_incident_status(session, user, incident_id, change.status))


@router.get("/audit", response_model=PageOf[AuditPublic])
def list_audit(user: User, db: Db, action: str | None = None, limit: Limit = 100,
               cursor: Cursor = None, format: Format = "json") -> Any:
    """The audit log (admins only): every user and sensor action, hash-chained."""
    return list_response(db, queries.audit_query(user, action=action), AuditRecord.id,
                         AuditPublic, fmt=format, limit=limit, cursor=cursor, filename="audit",
                         principal=user)
