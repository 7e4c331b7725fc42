"""Alerts and incidents beyond plain listing: the rule catalogue, an incident's timeline, and
the status changes analysts make (audited)."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import String, cast, or_, select
from sqlalchemy.orm import Session

from vigil.errors import InvalidInput
from vigil.server.db.models import VM, Alert, Event, Incident, utcnow
from vigil.server.detect.attack import technique
from vigil.server.detect.base import all_rules
from vigil.server.services.audit import audit
from vigil.server.services.auth import Principal
from vigil.server.services.queries import get_scoped

_TECHNIQUE = re.compile(r"^T\d{4}(\.\d{3})?$")
ANALYSTS = {"admin", "csp", "cirt"}


def rule_catalogue() -> list[dict[str, Any]]:
    """Every rule with its techniques spelled out (id, name, tactics, STIX id, URL)."""
    out = []
    for rule in sorted(all_rules(), key=lambda r: r.id):
        out.append({
            "id": rule.id, "title": rule.title, "description": rule.description(),
            "techniques": [_technique(t) for t in rule.techniques], "tactic": rule.tactic,
            "severity": rule.severity, "controls": list(rule.controls),
            "evidence_fields": list(rule.evidence_fields), "inputs": list(rule.inputs),
        })
    return out


def _technique(tid: str) -> dict[str, Any]:
    t = technique(tid)
    return {"id": t.id, "name": t.name, "tactics": list(t.tactics), "stix_id": t.stix_id,
            "url": t.url}


def technique_filter(stmt: Any, tid: str) -> Any:
    """Alerts naming ``tid`` or one of its sub-techniques (``T1110`` finds ``T1110.001``)."""
    if not _TECHNIQUE.match(tid):
        raise InvalidInput(f"technique must look like T1059 or T1059.004, not {tid!r}")
    text = cast(Alert.techniques, String)
    return stmt.where(or_(text.like(f'%"{tid}"%'), text.like(f'%"{tid}.%')))


def _event_ids(evidence: dict[str, Any]) -> list[str]:
    ids = []
    for value in evidence.values():
        if isinstance(value, dict) and isinstance(value.get("id"), str) and value.get("kind"):
            ids.append(value["id"])
        elif isinstance(value, list):
            ids.extend(v["id"] for v in value
                       if isinstance(v, dict) and isinstance(v.get("id"), str) and v.get("kind"))
    return ids


def incident_detail(session: Session, principal: Principal, incident_id: int) -> dict[str, Any]:
    """The incident, its alerts and a timeline of the alerts and the events they cite."""
    incident = get_scoped(session, principal, Incident, incident_id)
    alerts = list(session.scalars(select(Alert).where(Alert.incident_id == incident.id)
                                  .order_by(Alert.observed_at, Alert.id)))
    timeline: list[dict[str, Any]] = []
    wanted: list[str] = []
    for alert in alerts:
        timeline.append({"at": alert.observed_at, "type": "alert", "id": alert.id,
                         "title": alert.title, "severity": alert.severity,
                         "techniques": alert.techniques,
                         "detail": {"rule_id": alert.rule_id, "reason": alert.reason,
                                    "tactic": alert.tactic, "src_ip": alert.src_ip}})
        wanted.extend(_event_ids(alert.evidence))
    wanted = list(dict.fromkeys(wanted))[:500]
    if wanted:
        for event in session.scalars(select(Event).where(Event.uuid.in_(wanted),
                                                         Event.tenant_id == incident.tenant_id)):
            timeline.append({"at": event.observed_at, "type": "event", "id": event.uuid,
                             "title": event.message or event.kind,
                             "detail": {"kind": event.kind, "src_ip": event.src_ip,
                                        "user": event.username, "path": event.path,
                                        "seq": event.seq}})
    timeline.sort(key=lambda e: (e["at"], 0 if e["type"] == "event" else 1))
    vm = session.get(VM, incident.vm_id) if incident.vm_id else None
    return {"incident": incident, "alerts": alerts, "timeline": timeline,
            "vm_name": vm.name if vm else None}


def set_alert_status(session: Session, principal: Principal, alert_id: int, status: str) -> Alert:
    principal.require(ANALYSTS, "change an alert's status")
    alert = get_scoped(session, principal, Alert, alert_id)
    old, alert.status = alert.status, status
    audit(session, actor=principal.actor, action="alert.status", target_type="alert",
          target_id=alert.id, tenant_id=alert.tenant_id, detail={"from": old, "to": status})
    return alert


def set_incident_status(session: Session, principal: Principal, incident_id: int,
                        status: str) -> Incident:
    principal.require(ANALYSTS, "change an incident's status")
    incident = get_scoped(session, principal, Incident, incident_id)
    old, incident.status = incident.status, status
    incident.updated_at = utcnow()
    incident.closed_at = utcnow() if status == "closed" else None
    audit(session, actor=principal.actor, action="incident.status", target_type="incident",
          target_id=incident.id, tenant_id=incident.tenant_id, detail={"from": old, "to": status})
    return incident

