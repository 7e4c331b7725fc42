"""Notification channels and the outbox: who is told about new alerts and incidents, and how.

``enqueue`` is called inside the transaction that creates the alert or incident: it writes one
pending delivery per matching channel, so the message is sent if and only if the alert was
stored (outbox pattern). The notifier (``vigil.server.notify.dispatcher``) sends them.
"""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Select, delete, func, select
from sqlalchemy.orm import Session

from vigil.config import Settings
from vigil.errors import Conflict, InvalidInput, NotFound
from vigil.server.db.engine import Database
from vigil.server.db.models import (
    VM,
    Alert,
    Incident,
    NotificationChannel,
    NotificationDelivery,
    Tenant,
    utcnow,
)
from vigil.server.notify import EVENTS, TEST_EVENT, channel_class, dispatcher, severity_rank
from vigil.server.notify.webhook import signing_secret
from vigil.server.services.audit import audit
from vigil.server.services.auth import WRITE_ROLES, Principal
from vigil.server.services.queries import scoped

#: roles that may create, delete, test channels and reveal signing secrets
MANAGE_ROLES = WRITE_ROLES
STATUSES = ("pending", "delivered", "failed")
PAYLOAD_VERSION = 1


# --- channels ----------------------------------------------------------------------------------


def _tenant_id(session: Session, principal: Principal, tenant: str | None) -> int:
    """The tenant a new channel belongs to: the caller's, or the one an admin names."""
    if tenant is None:
        if principal.tenant_id is None:
            raise InvalidInput("say which tenant this channel belongs to (field 'tenant')")
        return principal.tenant_id
    tenant_id = session.scalar(select(Tenant.id).where(Tenant.name == tenant))
    if tenant_id is None or (principal.tenant_id is not None and principal.tenant_id != tenant_id):
        raise NotFound(f"no tenant {tenant!r}")
    return tenant_id


def tenant_filter(session: Session, principal: Principal, tenant: str | None) -> int | None:
    """A list's optional ``tenant`` filter as an id (another tenant's name is not found)."""
    return None if tenant is None else _tenant_id(session, principal, tenant)


def create_channel(
    session: Session, *, principal: Principal, settings: Settings, name: str, kind: str,
    target: str, tenant: str | None = None, min_severity: str = "high", on_alerts: bool = True,
    on_incidents: bool = True, enabled: bool = True,
) -> tuple[NotificationChannel, str | None]:
    """Create a channel; returns it with its signing secret (webhooks) to show once."""
    principal.require(MANAGE_ROLES, "manage notification channels")
    tenant_id = _tenant_id(session, principal, tenant)
    cls = channel_class(kind)
    severity_rank(min_severity)
    name = name.strip()
    if not 1 <= len(name) <= 100:
        raise InvalidInput("a channel name has 1 to 100 characters")
    if not (on_alerts or on_incidents):
        raise InvalidInput("a channel that takes neither alerts nor incidents sends nothing: "
                           "set on_alerts or on_incidents")
    target = cls.validate_target(target, settings=settings)
    if session.scalar(select(NotificationChannel.id).where(
            NotificationChannel.tenant_id == tenant_id, NotificationChannel.name == name)):
        raise Conflict(f"a notification channel {name!r} exists already in this tenant")
    channel = NotificationChannel(
        tenant_id=tenant_id, name=name, kind=kind, target=target, min_severity=min_severity,
        on_alerts=on_alerts, on_incidents=on_incidents, enabled=enabled,
        created_by=principal.user_id)
    session.add(channel)
    session.flush()
    audit(session, actor=principal.actor, action="notify.channel.create",
          target_type="notification_channel", target_id=channel.id, tenant_id=tenant_id,
          detail={"name": name, "kind": kind, "target": cls.redact_target(target),
                  "min_severity": min_severity, "on_alerts": on_alerts,
                  "on_incidents": on_incidents, "enabled": enabled})
    return channel, secret_of(channel, settings)


def secret_of(channel: NotificationChannel, settings: Settings) -> str | None:
    """A signed channel's secret (derived, never stored); None for unsigned kinds."""
    if not channel_class(channel.kind).signed:
        return None
    return signing_secret(settings.secret_key, channel.id)


def public_target(channel: NotificationChannel, principal: Principal) -> str:
    """The full target for managers; a redacted one for the roles that only read."""
    if principal.role in MANAGE_ROLES:
        return channel.target
    return channel_class(channel.kind).redact_target(channel.target)


def channels_query(principal: Principal, *, tenant_id: int | None = None) -> Select[Any]:
    stmt = scoped(select(NotificationChannel), principal, NotificationChannel.tenant_id)
    if tenant_id is not None:
        stmt = stmt.where(NotificationChannel.tenant_id == tenant_id)
    return stmt


def get_channel(session: Session, *, principal: Principal, channel_id: int) -> NotificationChannel:
    channel = session.get(NotificationChannel, channel_id)
    if channel is None:
        raise NotFound(f"no notification channel {channel_id}")
    principal.check_tenant(channel.tenant_id)
    return channel


def reveal_secret(session: Session, *, principal: Principal, settings: Settings,
                  channel_id: int) -> str:
    """A webhook channel's signing secret again (audited: it lets one forge messages)."""
    principal.require(MANAGE_ROLES, "see signing secrets")
    channel = get_channel(session, principal=principal, channel_id=channel_id)
    secret = secret_of(channel, settings)
    if secret is None:
        raise InvalidInput(f"a {channel.kind} channel has no signing secret: only webhooks do")
    audit(session, actor=principal.actor, action="notify.channel.secret",
          target_type="notification_channel", target_id=channel.id, tenant_id=channel.tenant_id)
    return secret


def delete_channel(session: Session, *, principal: Principal, channel_id: int) -> None:
    """Delete a channel with its deliveries (pending ones are not sent any more)."""
    principal.require(MANAGE_ROLES, "manage notification channels")
    channel = get_channel(session, principal=principal, channel_id=channel_id)
    removed = session.scalar(select(func.count()).select_from(NotificationDelivery).where(
        NotificationDelivery.channel_id == channel.id)) or 0
    session.execute(delete(NotificationDelivery).where(
        NotificationDelivery.channel_id == channel.id))
    session.delete(channel)
    audit(session, actor=principal.actor, action="notify.channel.delete",
          target_type="notification_channel", target_id=channel.id, tenant_id=channel.tenant_id,
          detail={"name": channel.name, "kind": channel.kind, "deliveries_removed": removed})


# --- the outbox --------------------------------------------------------------------------------


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def _envelope(*, event: str, tenant: Tenant | None, tenant_id: int, subject_type: str,
              subject_id: int, severity: str, data: dict[str, Any]) -> dict[str, Any]:
    """The payload every channel gets (see docs/notifications.md)."""
    return {
        "version": PAYLOAD_VERSION,
        "event": event,
        "created_at": utcnow().isoformat(),
        "tenant": {"id": tenant_id, "name": tenant.name if tenant else None},
        "subject": {"type": subject_type, "id": subject_id},
        "severity": severity,
        # stored as JSON: datetimes become ISO 8601 strings here, not at send time
        "data": json.loads(json.dumps(data, default=_json_default)),
    }


def _matches(channel: NotificationChannel, event: str, rank: int) -> bool:
    if event.startswith("alert.") and not channel.on_alerts:
        return False
    if event.startswith("incident.") and not channel.on_incidents:
        return False
    try:
        return rank >= severity_rank(channel.min_severity)
    except InvalidInput:  # a row written by hand with a bad severity: send rather than drop
        return True


def enqueue(
    session: Session, *, tenant_id: int, event: str, subject_type: str, subject_id: int,
    severity: str, payload: dict[str, Any],
) -> list[NotificationDelivery]:
    """Queue one pending delivery per enabled, matching channel of the tenant.

    Call it in the transaction that stores the alert or incident: a rollback drops the
    deliveries with it. ``payload`` (see ``alert_payload``/``incident_payload``) becomes the
    ``data`` of the message.
    """
    if event not in EVENTS:
        raise InvalidInput(f"unknown notification event {event!r}: one of {', '.join(EVENTS)}")
    rank = severity_rank(severity)
    channels = [c for c in session.scalars(
        select(NotificationChannel).where(NotificationChannel.tenant_id == tenant_id,
                                          NotificationChannel.enabled.is_(True))
        .order_by(NotificationChannel.id))
        if _matches(c, event, rank)]
    if not channels:
        return []
    envelope = _envelope(event=event, tenant=session.get(Tenant, tenant_id), tenant_id=tenant_id,
                         subject_type=subject_type, subject_id=subject_id, severity=severity,
                         data=payload)
    deliveries = [
        NotificationDelivery(tenant_id=tenant_id, channel_id=c.id, event=event,
                             subject_type=subject_type, subject_id=subject_id, payload=envelope,
                             status="pending", attempts=0, next_attempt_at=utcnow())
        for c in channels
    ]
    session.add_all(deliveries)
    return deliveries


def alert_payload(alert: Alert, *, vm_name: str | None = None) -> dict[str, Any]:
    """The ``data`` of an ``alert.created`` message."""
    return {
        "id": alert.id, "title": alert.title, "rule_id": alert.rule_id,
        "severity": alert.severity, "status": alert.status, "reason": alert.reason,
        "vm": {"id": alert.vm_id, "name": vm_name} if alert.vm_id is not None else None,
        "incident_id": alert.incident_id, "tactic": alert.tactic,
        "techniques": list(alert.techniques or []),
        "controls": list(alert.controls or []), "src_ip": alert.src_ip,
        "observed_at": alert.observed_at, "detected_at": alert.detected_at,
        "evidence": alert.evidence,
    }


def incident_payload(incident: Incident, *, vm_name: str | None = None) -> dict[str, Any]:
    """The ``data`` of an ``incident.created`` or ``incident.updated`` message."""
    return {
        "id": incident.id, "title": incident.title, "severity": incident.severity,
        "status": incident.status,
        "vm": {"id": incident.vm_id, "name": vm_name} if incident.vm_id is not None else None,
        "alert_count": incident.alert_count, "tactics": list(incident.tactics or []),
        "techniques": list(incident.techniques or []), "sources": list(incident.sources or []),
        "first_seen": incident.first_seen, "last_seen": incident.last_seen,
        "opened_at": incident.opened_at, "updated_at": incident.updated_at,
    }


def notify_detection(session: Session, *, alert: Alert, incident: Incident,
                     incident_outcome: str) -> None:
    """The detection engine's hook, in the transaction that stores the alert.

    Every new alert gives ``alert.created``; a new incident ``incident.created``; an incident
    whose severity rose ``incident.updated`` (an alert folded into an incident without raising
    its severity is told by its own ``alert.created`` only).
    """
    vm = session.get(VM, alert.vm_id) if alert.vm_id is not None else None
    vm_name = vm.name if vm is not None else None
    enqueue(session, tenant_id=alert.tenant_id, event="alert.created", subject_type="alert",
            subject_id=alert.id, severity=alert.severity,
            payload=alert_payload(alert, vm_name=vm_name))
    event = {"created": "incident.created", "escalated": "incident.updated"}.get(incident_outcome)
    if event is not None:
        enqueue(session, tenant_id=incident.tenant_id, event=event, subject_type="incident",
                subject_id=incident.id, severity=incident.severity,
                payload=incident_payload(incident, vm_name=vm_name))


def deliveries_query(principal: Principal, *, channel_id: int | None = None,
                     status: str | None = None, tenant_id: int | None = None) -> Select[Any]:
    """The delivery log, newest first (paginated by the caller)."""
    if status is not None and status not in STATUSES:
        raise InvalidInput(f"unknown delivery status {status!r}: one of {', '.join(STATUSES)}")
    stmt = scoped(select(NotificationDelivery), principal, NotificationDelivery.tenant_id)
    if tenant_id is not None:
        stmt = stmt.where(NotificationDelivery.tenant_id == tenant_id)
    if channel_id is not None:
        stmt = stmt.where(NotificationDelivery.channel_id == channel_id)
    if status is not None:
        stmt = stmt.where(NotificationDelivery.status == status)
    return stmt


def send_test(db: Database, *, settings: Settings, principal: Principal,
              channel_id: int) -> NotificationDelivery:
    """Send a test message now and return its delivery (delivered, or failed with the error).

    The delivery is written already claimed (one lease ahead), so the notifier leaves it to
    this request; a test is not retried.
    """
    principal.require(MANAGE_ROLES, "send test notifications")
    with db.write() as session:
        channel = get_channel(session, principal=principal, channel_id=channel_id)
        data = {"title": "Test notification from Vigil", "channel": channel.name,
                "message": "If you can read this, the channel works."}
        envelope = _envelope(event=TEST_EVENT, tenant=session.get(Tenant, channel.tenant_id),
                             tenant_id=channel.tenant_id, subject_type="channel",
                             subject_id=channel.id, severity="low", data=data)
        delivery = NotificationDelivery(
            tenant_id=channel.tenant_id, channel_id=channel.id, event=TEST_EVENT,
            subject_type="channel", subject_id=channel.id, payload=envelope, status="pending",
            attempts=1, next_attempt_at=utcnow() + timedelta(seconds=dispatcher.LEASE_SECONDS))
        session.add(delivery)
        session.flush()
        audit(session, actor=principal.actor, action="notify.channel.test",
              target_type="notification_channel", target_id=channel.id,
              tenant_id=channel.tenant_id, detail={"delivery_id": delivery.id})
        job = dispatcher.job_for(delivery, channel)
    outcome = dispatcher.send(job, settings)
    dispatcher.record(db, job, outcome, settings=settings, final=True)
    with db.read() as session:
        stored = session.get(NotificationDelivery, job.delivery_id)
        if stored is None:  # the channel was deleted meanwhile
            raise NotFound(f"no notification channel {channel_id}")
        return stored
