"""The audit log: every user and sensor action, UTC, hash-chained (NIST SP 800-53 AU-2..12)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from vigil.server.db.models import AuditRecord, utcnow

GENESIS = "0" * 64
_LOCK_KEY = 0x5649_4749  # "VIGI": PostgreSQL advisory lock serialising the chain


@dataclass(frozen=True)
class Actor:
    """Who did something: a user, a sensor or the system itself."""

    type: str
    name: str
    tenant_id: int | None = None
    client_ip: str | None = None


SYSTEM = Actor("system", "vigil")


def record_hash(prev_hash: str, fields: dict[str, Any]) -> str:
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256((prev_hash + canonical).encode()).hexdigest()


def _fields(rec: AuditRecord) -> dict[str, Any]:
    return {
        "at": rec.at.isoformat(),
        "actor_type": rec.actor_type,
        "actor": rec.actor,
        "tenant_id": rec.tenant_id,
        "action": rec.action,
        "target_type": rec.target_type,
        "target_id": rec.target_id,
        "outcome": rec.outcome,
        "client_ip": rec.client_ip,
        "detail": rec.detail,
    }


def audit(
    session: Session,
    *,
    actor: Actor,
    action: str,
    target_type: str = "",
    target_id: object = "",
    outcome: str = "success",
    tenant_id: int | None = None,
    detail: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> AuditRecord:
    """Append one record to the chain, inside the caller's (write) transaction."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
    at = at or utcnow()
    prev = session.scalar(select(AuditRecord.hash).order_by(AuditRecord.id.desc()).limit(1))
    rec = AuditRecord(
        at=at,
        actor_type=actor.type,
        actor=actor.name,
        tenant_id=tenant_id if tenant_id is not None else actor.tenant_id,
        action=action,
        target_type=target_type,
        target_id=str(target_id),
        outcome=outcome,
        client_ip=actor.client_ip,
        detail=detail or {},
        prev_hash=prev or GENESIS,
    )
    rec.hash = record_hash(rec.prev_hash, _fields(rec))
    session.add(rec)
    session.flush()
    return rec


def verify_chain(session: Session) -> tuple[int, int | None]:
    """Recompute the chain: (records checked, id of the first broken record or None)."""
    prev = GENESIS
    count = 0
    for rec in session.scalars(select(AuditRecord).order_by(AuditRecord.id)).yield_per(1000):
        count += 1
        if rec.prev_hash != prev or record_hash(prev, _fields(rec)) != rec.hash:
            return count, rec.id
        prev = rec.hash
    return count, None
