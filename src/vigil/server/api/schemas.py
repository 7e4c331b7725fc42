"""Response and request models of the read API, suffixed by role (``VMPublic``, ``HostCreate``).

Public models list their fields explicitly, so secrets and hashes cannot leak by accident.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")


class PublicModel(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class PageOf(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(None, description="pass as ?cursor= to get the next page")


class HostCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=255)
    tenant: str | None = None
    site: str = Field("", max_length=255)
    country: str = Field("", max_length=2, description="ISO 3166 alpha-2")
    latitude: float | None = Field(None, ge=-90, le=90)
    longitude: float | None = Field(None, ge=-180, le=180)


class HostPublic(PublicModel):
    id: int
    tenant_id: int
    name: str
    site: str
    country: str
    latitude: float | None
    longitude: float | None
    created_at: datetime


class VMCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=255)
    tenant: str | None = None
    host_id: int | None = None
    machine_id: str | None = Field(None, pattern=r"^[0-9a-fA-F-]{32,36}$")
    smbios_uuid: str | None = Field(None, pattern=r"^[0-9a-fA-F-]{36}$")


class VMPublic(PublicModel):
    id: int
    tenant_id: int
    host_id: int | None
    name: str
    machine_id: str | None
    smbios_uuid: str | None
    os: str
    kernel: str
    created_at: datetime
    status: str = Field(description="online, offline or 'no sensor' (from heartbeats)")
    last_seen_at: datetime | None = None


class SensorPublic(PublicModel):
    id: str
    tenant_id: int
    kind: str
    hostname: str
    vm_id: int | None
    host_id: int | None
    version: str
    privileged: bool
    heartbeat_interval: float
    enrolled_at: datetime
    last_seen_at: datetime | None
    revoked_at: datetime | None
    status: str
    resources: dict[str, Any] | None = None
    unreadable: list[Any] | None = None


class EventPublic(PublicModel):
    seq: int
    uuid: str
    tenant_id: int
    vm_id: int | None
    sensor_id: str
    kind: str
    observed_at: datetime
    received_at: datetime
    source: str
    message: str
    src_ip: str | None
    username: str | None
    pid: int | None
    path: str | None
    data: dict[str, Any]


class InventoryItemPublic(PublicModel):
    id: int
    vm_id: int
    kind: str
    key: str
    first_seen: datetime
    removed_at: datetime | None
    data: dict[str, Any]


class AlertPublic(PublicModel):
    id: int
    tenant_id: int
    vm_id: int | None
    incident_id: int | None
    rule_id: str
    title: str
    severity: str
    techniques: list[Any]
    controls: list[Any]
    tactic: str
    observed_at: datetime
    detected_at: datetime
    reason: str
    src_ip: str | None
    evidence: dict[str, Any]
    status: str


class IncidentPublic(PublicModel):
    id: int
    tenant_id: int
    vm_id: int | None
    title: str
    severity: str
    status: str
    opened_at: datetime
    updated_at: datetime
    closed_at: datetime | None
    first_seen: datetime | None
    last_seen: datetime | None
    tactics: list[str]
    techniques: list[str]
    sources: list[str]
    alert_count: int


class TimelineEntry(BaseModel):
    at: datetime
    type: Literal["alert", "event"]
    id: int | str
    title: str
    severity: str | None = None
    techniques: list[str] = []
    detail: dict[str, Any] = {}


class IncidentDetail(IncidentPublic):
    vm_name: str | None = None
    alerts: list[AlertPublic]
    timeline: list[TimelineEntry]


class TechniquePublic(BaseModel):
    id: str
    name: str
    tactics: list[str]
    stix_id: str
    url: str


class RulePublic(BaseModel):
    id: str
    title: str
    description: str
    techniques: list[TechniquePublic]
    tactic: str
    severity: str
    controls: list[str]
    evidence_fields: list[str]
    inputs: list[str]


class AlertUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: Literal["open", "acknowledged", "closed", "false_positive"]


class IncidentUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: Literal["open", "investigating", "contained", "closed"]


class TaskStatus(PublicModel):
    id: int
    vm_id: int | None
    sensor_id: str
    kind: str
    status: str
    created_at: datetime
    sent_at: datetime | None
    completed_at: datetime | None
    result: dict[str, Any] | None
    error: str | None


class AuditPublic(PublicModel):
    id: int
    at: datetime
    actor_type: str
    actor: str
    tenant_id: int | None
    action: str
    target_type: str
    target_id: str
    outcome: str
    client_ip: str | None
    detail: dict[str, Any]
    hash: str


class EnrollTokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tenant: str
    ttl_hours: float = Field(24.0, gt=0, le=24 * 30)


class EnrollTokenPublic(BaseModel):
    token: str = Field(description="shown once; only its hash is kept")
    tenant: str
    expires_at: datetime


class MePublic(BaseModel):
    user_id: int
    email: str
    role: str
    tenant_id: int | None
