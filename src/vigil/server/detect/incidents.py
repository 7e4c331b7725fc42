"""Correlation: alerts on one VM that follow each other within a window form one incident."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from vigil.server.db.models import VM, Alert, Incident, utcnow
from vigil.server.detect.attack import TACTIC_NAMES, kill_chain_order
from vigil.server.detect.base import SEVERITY_RANK, max_severity

OPEN_STATUSES = ("open", "investigating", "contained")
MAX_SOURCES = 50


def incident_title(vm_name: str, tactics: list[str], first_title: str, count: int) -> str:
    """"Reverse shell on web-1", or "web-1: Credential Access → Initial Access → Execution"."""
    if count <= 1 or len(tactics) <= 1:
        title = f"{first_title} on {vm_name}"
    else:
        title = f"{vm_name}: " + " → ".join(TACTIC_NAMES.get(t, t) for t in tactics)
    return title[:255]


def attach(session: Session, alert: Alert, *, window: timedelta) -> tuple[Incident, str]:
    """Put ``alert`` into the open incident of its VM within ``window``, or a new one.

    Returns the incident and what happened: "created", "escalated" (its severity rose) or
    "updated". The caller holds the VM's row lock on PostgreSQL (see the engine).
    """
    observed = alert.observed_at
    stmt = (
        select(Incident)
        .where(Incident.tenant_id == alert.tenant_id, Incident.status.in_(OPEN_STATUSES),
               Incident.last_seen >= observed - window, Incident.first_seen <= observed + window)
        .order_by(Incident.last_seen.desc())
        .limit(1)
    )
    stmt = stmt.where(Incident.vm_id.is_(None) if alert.vm_id is None else Incident.vm_id == alert.vm_id)
    incident = session.scalars(stmt).first()
    now = utcnow()
    outcome = "updated"
    if incident is None:
        incident = Incident(tenant_id=alert.tenant_id, vm_id=alert.vm_id, title="",
                            severity=alert.severity, status="open", opened_at=now, updated_at=now,
                            first_seen=observed, last_seen=observed, tactics=[], techniques=[],
                            sources=[], alert_count=0)
        session.add(incident)
        outcome = "created"
    elif SEVERITY_RANK[alert.severity] > SEVERITY_RANK.get(incident.severity, 0):
        outcome = "escalated"
    incident.severity = max_severity(incident.severity, alert.severity)
    incident.first_seen = min(incident.first_seen or observed, observed)
    incident.last_seen = max(incident.last_seen or observed, observed)
    tactics = [*incident.tactics, alert.tactic] if alert.tactic else incident.tactics
    incident.tactics = kill_chain_order(tactics)
    incident.techniques = sorted({*incident.techniques, *alert.techniques})
    if alert.src_ip and alert.src_ip not in incident.sources and len(incident.sources) < MAX_SOURCES:
        incident.sources = [*incident.sources, alert.src_ip]
    incident.alert_count = (incident.alert_count or 0) + 1
    incident.updated_at = now
    vm = session.get(VM, alert.vm_id) if alert.vm_id else None
    vm_name = vm.name if vm is not None else "unknown VM"
    first_title = alert.title
    if incident.alert_count > 1 and incident.id is not None:
        first = session.scalars(select(Alert.title).where(Alert.incident_id == incident.id)
                                .order_by(Alert.observed_at).limit(1)).first()
        first_title = first or alert.title
    incident.title = incident_title(vm_name, incident.tactics, first_title, incident.alert_count)
    session.flush()
    alert.incident_id = incident.id
    return incident, outcome
