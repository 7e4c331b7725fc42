"""Correlation: alerts on one VM that follow each other within a window form one incident."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from vigil.server.db.models import VM, Alert, Incident, utcnow
from vigil.server.detect.attack import TACTIC_NAMES, TECHNIQUES, kill_chain_order
from vigil.server.detect.base import SEVERITY_RANK, max_severity

OPEN_STATUSES = ("open", "investigating", "contained")
MAX_SOURCES = 50


def alert_tactics(alert: Alert) -> list[str]:
    """The tactic the alert stands for, and those of its techniques that have only one (a
    reverse shell is execution, and its T1095 channel command and control; T1078's four
    tactics are left to the rule's choice)."""
    tactics = [alert.tactic] if alert.tactic else []
    for tid in alert.techniques:
        known = TECHNIQUES.get(tid)
        if known is not None and len(known.tactics) == 1:
            tactics.append(known.tactics[0])
    return tactics


def incident_title(vm_name: str, tactics: list[str], first_title: str, count: int) -> str:
    """"Reverse shell on web-1", or "web-1: Credential Access → Initial Access → Execution"."""
    if count <= 1 or len(tactics) <= 1:
        title = f"{first_title} on {vm_name}"
    else:
        title = f"{vm_name}: " + " → ".join(TACTIC_NAMES.get(t, t) for t in tactics)
    return title[:255]


class BatchCache:
    """What correlation looked up for one batch: a burst of alerts costs one query."""

    def __init__(self) -> None:
        self.incidents: dict[int | None, Incident] = {}
        self.vm_names: dict[int | None, str] = {}
        self.first_titles: dict[int, str] = {}


def _fits(incident: Incident, observed: datetime, window: timedelta) -> bool:
    return (incident.status in OPEN_STATUSES and incident.last_seen is not None
            and incident.first_seen is not None and incident.last_seen >= observed - window
            and incident.first_seen <= observed + window)


def attach(session: Session, alert: Alert, *, window: timedelta,
           cache: BatchCache | None = None) -> tuple[Incident, str]:
    """Put ``alert`` into the open incident of its VM within ``window``, or a new one.

    Returns the incident and what happened: "created", "escalated" (its severity rose) or
    "updated". The caller holds the VM's row lock on PostgreSQL (see the engine).
    """
    cache = cache or BatchCache()
    observed = alert.observed_at
    cached = cache.incidents.get(alert.vm_id)
    if cached is not None and _fits(cached, observed, window):
        return _fold(session, alert, cached, "updated", cache)
    stmt = (
        select(Incident)
        .where(Incident.tenant_id == alert.tenant_id, Incident.status.in_(OPEN_STATUSES),
               Incident.last_seen >= observed - window, Incident.first_seen <= observed + window)
        .order_by(Incident.last_seen.desc())
        .limit(1)
    )
    stmt = stmt.where(Incident.vm_id.is_(None) if alert.vm_id is None else Incident.vm_id == alert.vm_id)
    incident = session.scalars(stmt).first()
    outcome = "updated"
    if incident is None:
        now = utcnow()
        incident = Incident(tenant_id=alert.tenant_id, vm_id=alert.vm_id, title="",
                            severity=alert.severity, status="open", opened_at=now, updated_at=now,
                            first_seen=observed, last_seen=observed, tactics=[], techniques=[],
                            sources=[], alert_count=0)
        session.add(incident)
        outcome = "created"
    return _fold(session, alert, incident, outcome, cache)


def _fold(session: Session, alert: Alert, incident: Incident, outcome: str,
          cache: BatchCache) -> tuple[Incident, str]:
    observed = alert.observed_at
    if outcome == "updated" and SEVERITY_RANK[alert.severity] > SEVERITY_RANK.get(incident.severity, 0):
        outcome = "escalated"
    incident.severity = max_severity(incident.severity, alert.severity)
    incident.first_seen = min(incident.first_seen or observed, observed)
    incident.last_seen = max(incident.last_seen or observed, observed)
    incident.tactics = kill_chain_order([*incident.tactics, *alert_tactics(alert)])
    incident.techniques = sorted({*incident.techniques, *alert.techniques})
    if alert.src_ip and alert.src_ip not in incident.sources and len(incident.sources) < MAX_SOURCES:
        incident.sources = [*incident.sources, alert.src_ip]
    incident.alert_count = (incident.alert_count or 0) + 1
    incident.updated_at = utcnow()
    if alert.vm_id not in cache.vm_names:
        vm = session.get(VM, alert.vm_id) if alert.vm_id else None
        cache.vm_names[alert.vm_id] = vm.name if vm is not None else "unknown VM"
    first_title = alert.title
    if incident.alert_count > 1 and incident.id is not None:
        if incident.id not in cache.first_titles:
            first = session.scalars(select(Alert.title).where(Alert.incident_id == incident.id)
                                    .order_by(Alert.observed_at).limit(1)).first()
            cache.first_titles[incident.id] = first or alert.title
        first_title = cache.first_titles[incident.id]
    incident.title = incident_title(cache.vm_names[alert.vm_id], incident.tactics, first_title,
                                    incident.alert_count)
    if incident.id is None:
        session.flush()
        cache.first_titles[incident.id] = alert.title
    alert.incident_id = incident.id
    cache.incidents[alert.vm_id] = incident
    return incident, outcome
