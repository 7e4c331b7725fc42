"""The database schema (SQLAlchemy 2). Migrations in ``migrations/`` are made from it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def db_time(value: datetime, sqlite: bool) -> Any:
    """``value`` as :class:`UTCDateTime` stores it, for raw driver statements on hot paths."""
    if not sqlite:
        return value
    # SQLAlchemy's SQLite DATETIME text, "YYYY-MM-DD HH:MM:SS.ffffff" in UTC; sensors send UTC,
    # so the common case is a slice of isoformat (this runs for every event of every batch)
    text = value.isoformat(" ", "microseconds")
    if text.endswith("+00:00"):
        return text[:-6]
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


JSONType = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSONType, list[Any]: JSONType}


class Tenant(Base):
    """A cloud service provider (CSP) whose hosts and VMs Vigil watches."""

    __tablename__ = "tenants"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    #: None for admins, who see every tenant
    tenant_id: Mapped[int | None] = mapped_column(ForeignKey("tenants.id"))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiToken(Base):
    """A user's token for scripts (``vigil token api``); only its SHA-256 is stored."""

    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class WebSession(Base):
    """A portal login; the cookie holds the token, the database its SHA-256."""

    __tablename__ = "web_sessions"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]


class EnrollmentToken(Base):
    """A one-time, expiring token a sensor exchanges for its own credentials."""

    __tablename__ = "enrollment_tokens"
    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
    sensor_id: Mapped[str | None] = mapped_column(String(36))


class Host(Base):
    """A hypervisor host of a tenant, with where it stands (for the map)."""

    __tablename__ = "hosts"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    site: Mapped[str] = mapped_column(String(255), default="")
    country: Mapped[str] = mapped_column(String(2), default="")
    latitude: Mapped[float | None] = mapped_column(Float)
    longitude: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class VM(Base):
    """A virtual machine: one record whichever sensor (guest or host) sees it first."""

    __tablename__ = "vms"
    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    host_id: Mapped[int | None] = mapped_column(ForeignKey("hosts.id"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    machine_id: Mapped[str | None] = mapped_column(String(36), index=True)
    smbios_uuid: Mapped[str | None] = mapped_column(String(36), index=True)
    os: Mapped[str] = mapped_column(String(255), default="")
    kernel: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Sensor(Base):
    __tablename__ = "sensors"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    kind: Mapped[str] = mapped_column(String(8))
    secret_hash: Mapped[str] = mapped_column(String(64))
    hostname: Mapped[str] = mapped_column(String(255))
    vm_id: Mapped[int | None] = mapped_column(ForeignKey("vms.id"), index=True)
    host_id: Mapped[int | None] = mapped_column(ForeignKey("hosts.id"))
    version: Mapped[str] = mapped_column(String(64), default="")
    privileged: Mapped[bool] = mapped_column(Boolean, default=False)
    heartbeat_interval: Mapped[float] = mapped_column(Float)
    enrolled_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime | None]
    stopped_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    resources: Mapped[dict[str, Any] | None]
    unreadable: Mapped[list[Any] | None]


class Heartbeat(Base):
    __tablename__ = "heartbeats"
    __table_args__ = (Index("ix_heartbeats_sensor_received", "sensor_id", "received_at"),)
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    sensor_id: Mapped[str] = mapped_column(String(36))
    received_at: Mapped[datetime]
    sent_at: Mapped[datetime]
    seq: Mapped[int] = mapped_column(BigInteger)
    cpu_percent: Mapped[float | None] = mapped_column(Float)
    mem_used: Mapped[int | None] = mapped_column(BigInteger)
    mem_total: Mapped[int | None] = mapped_column(BigInteger)
    disk_used: Mapped[int | None] = mapped_column(BigInteger)
    disk_total: Mapped[int | None] = mapped_column(BigInteger)
    net_rx_bytes: Mapped[int | None] = mapped_column(BigInteger)
    net_tx_bytes: Mapped[int | None] = mapped_column(BigInteger)
    spool_backlog: Mapped[int] = mapped_column(Integer, default=0)


class Snapshot(Base):
    """One inventory snapshot (full or a diff) received from a sensor; its UUID dedups."""

    __tablename__ = "snapshots"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    vm_id: Mapped[int] = mapped_column(ForeignKey("vms.id"), index=True)
    sensor_id: Mapped[str] = mapped_column(String(36))
    kind: Mapped[str] = mapped_column(String(16))
    full: Mapped[bool] = mapped_column(Boolean)
    taken_at: Mapped[datetime]
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    added: Mapped[int] = mapped_column(Integer, default=0)
    changed: Mapped[int] = mapped_column(Integer, default=0)
    removed: Mapped[int] = mapped_column(Integer, default=0)


class InventoryItem(Base):
    """One version of one inventory item; ``removed_at`` is null while it is current.

    A changed item closes its old row and opens a new one, so the table is the history.
    """

    __tablename__ = "inventory_items"
    __table_args__ = (
        Index("ix_inventory_current", "vm_id", "kind", "removed_at", "id"),
        Index(
            "uq_inventory_current_key",
            "vm_id",
            "kind",
            "key",
            unique=True,
            sqlite_where=text("removed_at IS NULL"),
            postgresql_where=text("removed_at IS NULL"),
        ),
    )
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    vm_id: Mapped[int] = mapped_column(ForeignKey("vms.id"))
    kind: Mapped[str] = mapped_column(String(16))
    key: Mapped[str] = mapped_column(String(600))
    data: Mapped[dict[str, Any]]
    first_seen: Mapped[datetime]
    removed_at: Mapped[datetime | None]


class Event(Base):
    """A security event from a sensor (log line, persistence change, log tampering...)."""

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_tenant_seq", "tenant_id", "seq"),
        Index("ix_events_vm_seq", "vm_id", "seq"),
    )
    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True)
    tenant_id: Mapped[int] = mapped_column(Integer)
    vm_id: Mapped[int | None] = mapped_column(Integer)
    sensor_id: Mapped[str] = mapped_column(String(36))
    kind: Mapped[str] = mapped_column(String(32))
    observed_at: Mapped[datetime]
    received_at: Mapped[datetime]
    source: Mapped[str] = mapped_column(String(1024), default="")
    message: Mapped[str] = mapped_column(Text, default="")
    src_ip: Mapped[str | None] = mapped_column(String(45))
    username: Mapped[str | None] = mapped_column(String(255))
    pid: Mapped[int | None] = mapped_column(Integer)
    path: Mapped[str | None] = mapped_column(Text)
    data: Mapped[dict[str, Any]]


class Incident(Base):
    """Alerts on one VM that follow each other within the correlation window."""

    __tablename__ = "incidents"
    __table_args__ = (Index("ix_incidents_vm_last_seen", "vm_id", "last_seen"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    vm_id: Mapped[int | None] = mapped_column(ForeignKey("vms.id"))
    title: Mapped[str] = mapped_column(String(255))
    severity: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="open")
    opened_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    closed_at: Mapped[datetime | None]
    #: the observed time of its first and latest alert
    first_seen: Mapped[datetime | None]
    last_seen: Mapped[datetime | None]
    #: ATT&CK tactics in kill-chain order, technique ids, attacker addresses
    tactics: Mapped[list[Any]] = mapped_column(default=list)
    techniques: Mapped[list[Any]] = mapped_column(default=list)
    sources: Mapped[list[Any]] = mapped_column(default=list)
    alert_count: Mapped[int] = mapped_column(Integer, default=0)


class Alert(Base):
    """What a detection rule raised, with the evidence that made it fire."""

    __tablename__ = "alerts"
    __table_args__ = (
        Index("ix_alerts_tenant_id", "tenant_id", "id"),
        UniqueConstraint("dedup_key", name="uq_alerts_dedup_key"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"))
    vm_id: Mapped[int | None] = mapped_column(ForeignKey("vms.id"), index=True)
    incident_id: Mapped[int | None] = mapped_column(ForeignKey("incidents.id"), index=True)
    rule_id: Mapped[str] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(String(255))
    severity: Mapped[str] = mapped_column(String(16))
    techniques: Mapped[list[Any]]
    controls: Mapped[list[Any]]
    observed_at: Mapped[datetime]
    detected_at: Mapped[datetime] = mapped_column(default=utcnow)
    evidence: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(16), default="open")
    #: the ATT&CK tactic this step of the attack stands for (e.g. "initial-access")
    tactic: Mapped[str] = mapped_column(String(32), default="")
    #: why the rule fired, in one sentence
    reason: Mapped[str] = mapped_column(Text, default="")
    src_ip: Mapped[str | None] = mapped_column(String(45))
    #: one alert per rule, scope and subject (e.g. a process), however often it is seen
    dedup_key: Mapped[str] = mapped_column(String(512))


class RuleState(Base):
    """What a stateful rule remembers (windows, counters, baselines), shared by all workers."""

    __tablename__ = "rule_state"
    __table_args__ = (UniqueConstraint("rule_id", "scope", "key", name="uq_rule_state_key"),)
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    rule_id: Mapped[str] = mapped_column(String(64))
    #: "vm:<id>" or "tenant:<id>"
    scope: Mapped[str] = mapped_column(String(64))
    key: Mapped[str] = mapped_column(String(255))
    data: Mapped[dict[str, Any]]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    #: may be deleted after this time (windows that have passed)
    expires_at: Mapped[datetime | None] = mapped_column(index=True)


class NotificationChannel(Base):
    """Where a tenant's new alerts and incidents are sent (a webhook or e-mail addresses)."""

    __tablename__ = "notification_channels"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(16))  # "webhook" | "email"
    #: the webhook URL, or the e-mail recipients separated by commas
    target: Mapped[str] = mapped_column(String(2000))
    min_severity: Mapped[str] = mapped_column(String(16), default="high")
    on_alerts: Mapped[bool] = mapped_column(Boolean, default=True)
    on_incidents: Mapped[bool] = mapped_column(Boolean, default=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class NotificationDelivery(Base):
    """One message to one channel: written with the alert (outbox), sent and retried later."""

    __tablename__ = "notification_deliveries"
    __table_args__ = (Index("ix_deliveries_due", "status", "next_attempt_at"),)
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    tenant_id: Mapped[int] = mapped_column(Integer, index=True)
    channel_id: Mapped[int] = mapped_column(ForeignKey("notification_channels.id"), index=True)
    #: "alert.created" | "incident.created" | "incident.updated"
    event: Mapped[str] = mapped_column(String(32))
    subject_type: Mapped[str] = mapped_column(String(16))
    subject_id: Mapped[int] = mapped_column(Integer)
    payload: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending|delivered|failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text)
    response_status: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None]


class Task(Base):
    """Work for a sensor, handed out with its next heartbeat (``live_query`` for now)."""

    __tablename__ = "tasks"
    __table_args__ = (Index("ix_tasks_sensor_status", "sensor_id", "status"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"))
    sensor_id: Mapped[str] = mapped_column(ForeignKey("sensors.id"))
    vm_id: Mapped[int | None] = mapped_column(ForeignKey("vms.id"))
    kind: Mapped[str] = mapped_column(String(32))
    params: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(16), default="pending")
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    result: Mapped[dict[str, Any] | None]
    error: Mapped[str | None] = mapped_column(Text)


class AuditRecord(Base):
    """Append-only record of a user or sensor action (NIST SP 800-53 AU-2/3/8/12).

    Each record carries the SHA-256 of the previous one (AU-9/10): a changed or deleted row
    breaks the chain, and database triggers refuse UPDATE and DELETE outright.
    """

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    actor_type: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(254))
    tenant_id: Mapped[int | None] = mapped_column(Integer, index=True)
    action: Mapped[str] = mapped_column(String(64), index=True)
    target_type: Mapped[str] = mapped_column(String(32), default="")
    target_id: Mapped[str] = mapped_column(String(64), default="")
    outcome: Mapped[str] = mapped_column(String(16), default="success")
    client_ip: Mapped[str | None] = mapped_column(String(45))
    detail: Mapped[dict[str, Any]]
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
