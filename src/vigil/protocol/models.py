"""Pydantic models of every message between a sensor and the server.

Everything a sensor sends is hostile until these models accept it: strings are bounded,
numbers ranged, unknown fields refused, and times made timezone-aware (UTC).
"""

from __future__ import annotations

import functools
import ipaddress
from datetime import UTC, datetime
from typing import Annotated, Literal, TypeVar
from uuid import UUID

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
)

from vigil.protocol import (
    EVENT_KINDS,
    MAX_BATCH_EVENTS,
    MAX_BATCH_SNAPSHOTS,
    MAX_MESSAGE_CHARS,
    MAX_SNAPSHOT_ITEMS,
)


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


@functools.lru_cache(maxsize=4096)
def _ip(value: str | None) -> str | None:
    # cached: the addresses in a batch repeat (one attacker, many attempts)
    if value is None or value == "":
        return None
    return str(ipaddress.ip_address(value))


UTCDatetime = Annotated[datetime, AfterValidator(_utc)]
#: timezone required, checked in pydantic's core (the hot path of ingest); stored as UTC
AwareTime = AwareDatetime
EventKind = Literal[tuple(EVENT_KINDS)]  # type: ignore[valid-type]
IPAddress = Annotated[str | None, AfterValidator(_ip)]
Short = Annotated[str, Field(max_length=255)]
Text = Annotated[str, Field(max_length=MAX_MESSAGE_CHARS)]
Port = Annotated[int, Field(ge=0, le=65535)]
Pid = Annotated[int, Field(ge=0, le=2**31)]
Uid = Annotated[int, Field(ge=-1, le=2**32)]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
JSONScalar = str | int | float | bool | None
JSONValue = JSONScalar | list[JSONScalar] | dict[str, JSONScalar]


class Model(BaseModel):
    """Base of every wire model: unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid", str_max_length=MAX_MESSAGE_CHARS)


# --- enrollment and heartbeats ---------------------------------------------------------------


class EnrollRequest(Model):
    enroll_token: Annotated[str, Field(min_length=8, max_length=200)]
    kind: Literal["guest", "host"]
    hostname: Short
    machine_id: Annotated[str | None, Field(pattern=r"^[0-9a-fA-F-]{32,36}$")] = None
    smbios_uuid: UUID | None = None
    os: Short | None = None
    kernel: Short | None = None
    sensor_version: Annotated[str, Field(max_length=64)] = "unknown"
    privileged: bool = False


class EnrollResponse(Model):
    sensor_id: UUID
    token: str
    tenant: str
    vm_id: int | None = None
    host_id: int | None = None
    heartbeat_interval: float


class ResourceUsage(Model):
    cpu_percent: Annotated[float, Field(ge=0, le=100)]
    cpu_count: Annotated[int, Field(ge=1, le=4096)] = 1
    load1: Annotated[float, Field(ge=0)] | None = None
    mem_total: Annotated[int, Field(ge=0)]
    mem_used: Annotated[int, Field(ge=0)]
    disk_total: Annotated[int, Field(ge=0)] = 0
    disk_used: Annotated[int, Field(ge=0)] = 0
    net_rx_bytes: Annotated[int, Field(ge=0)] = 0
    net_tx_bytes: Annotated[int, Field(ge=0)] = 0
    sensor_cpu_percent: Annotated[float, Field(ge=0)] | None = None
    sensor_rss: Annotated[int, Field(ge=0)] | None = None


class HeartbeatRequest(Model):
    sent_at: UTCDatetime
    seq: Annotated[int, Field(ge=0)] = 0
    resources: ResourceUsage | None = None
    spool_backlog: Annotated[int, Field(ge=0)] = 0
    shutting_down: bool = False
    #: the sensor's own beat interval, so the server knows when 3 missed beats have passed
    interval: Annotated[float, Field(ge=0.1, le=86400)] | None = None
    unreadable: Annotated[list[Short], Field(max_length=100)] = []


class TaskPublic(Model):
    id: int
    kind: Literal["live_query"]
    params: dict[str, JSONValue] = {}
    created_at: UTCDatetime


class HeartbeatResponse(Model):
    server_time: UTCDatetime
    heartbeat_interval: float
    tasks: list[TaskPublic] = []


# --- inventory items -------------------------------------------------------------------------


class Item(Model):
    key: Annotated[str, Field(min_length=1, max_length=600)]


class ProcessItem(Item):
    pid: Pid
    ppid: Pid | None = None
    name: Short
    exe: Text | None = None
    cmdline: Annotated[list[Text], Field(max_length=256)] = []
    uid: Uid | None = None
    euid: Uid | None = None
    gid: Uid | None = None
    username: Short | None = None
    start_time: UTCDatetime | None = None
    sha256: Sha256 | None = None
    exe_deleted: bool = False
    stdio_sockets: Annotated[list[Annotated[int, Field(ge=0, le=2)]], Field(max_length=3)] = []
    cwd: Text | None = None
    terminal: Short | None = None
    #: the remote end of a TCP/UDP socket on fd 0, 1 or 2 (unix sockets are not reported here)
    stdio_raddr: IPAddress = None
    stdio_rport: Port | None = None
    #: the parent as it was when this process was seen (it may exit before the server looks)
    parent_name: Short | None = None
    parent_uid: Uid | None = None
    parent_exe: Text | None = None
    #: the variables of ``vigil.protocol.SECURITY_ENV_VARS`` that are set, and only those
    env: Annotated[dict[Annotated[str, Field(max_length=32)], Text], Field(max_length=16)] = {}


class ConnectionItem(Item):
    proto: Literal["tcp", "tcp6", "udp", "udp6"]
    laddr: IPAddress
    lport: Port
    raddr: IPAddress = None
    rport: Port | None = None
    status: Annotated[str, Field(max_length=32)] = ""
    pid: Pid | None = None
    process_name: Short | None = None
    uid: Uid | None = None


class ListeningItem(Item):
    proto: Literal["tcp", "tcp6", "udp", "udp6"]
    addr: IPAddress
    port: Port
    pid: Pid | None = None
    process_name: Short | None = None


class ServiceItem(Item):
    name: Short
    load_state: Annotated[str, Field(max_length=32)] = ""
    active_state: Annotated[str, Field(max_length=32)] = ""
    sub_state: Annotated[str, Field(max_length=32)] = ""
    description: Text = ""


class PackageItem(Item):
    manager: Literal["dpkg", "rpm", "pip", "apk"]
    name: Short
    version: Short = ""
    arch: Annotated[str, Field(max_length=32)] = ""


class UserSessionItem(Item):
    name: Short
    terminal: Short | None = None
    host: Short | None = None
    started: UTCDatetime | None = None
    pid: Pid | None = None


class _SnapshotBase(Model):
    id: UUID
    taken_at: UTCDatetime
    full: bool
    removed: Annotated[list[Annotated[str, Field(max_length=600)]], Field(max_length=MAX_SNAPSHOT_ITEMS)] = []


T = TypeVar("T")
Bounded = Annotated[list[T], Field(max_length=MAX_SNAPSHOT_ITEMS)]


class ProcessesSnapshot(_SnapshotBase):
    kind: Literal["processes"]
    items: Bounded[ProcessItem] = []


class ConnectionsSnapshot(_SnapshotBase):
    kind: Literal["connections"]
    items: Bounded[ConnectionItem] = []


class ListeningSnapshot(_SnapshotBase):
    kind: Literal["listening"]
    items: Bounded[ListeningItem] = []


class ServicesSnapshot(_SnapshotBase):
    kind: Literal["services"]
    items: Bounded[ServiceItem] = []


class PackagesSnapshot(_SnapshotBase):
    kind: Literal["packages"]
    items: Bounded[PackageItem] = []


class UsersSnapshot(_SnapshotBase):
    kind: Literal["users"]
    items: Bounded[UserSessionItem] = []


Snapshot = Annotated[
    ProcessesSnapshot
    | ConnectionsSnapshot
    | ListeningSnapshot
    | ServicesSnapshot
    | PackagesSnapshot
    | UsersSnapshot,
    Field(discriminator="kind"),
]

ITEM_MODELS: dict[str, type[Item]] = {
    "processes": ProcessItem,
    "connections": ConnectionItem,
    "listening": ListeningItem,
    "services": ServiceItem,
    "packages": PackageItem,
    "users": UserSessionItem,
}


# --- security events and batches -------------------------------------------------------------


#: a UUID in its canonical lowercase text form, checked in pydantic's core: event ids are the
#: hottest field of ingest, and kept as text they need no conversion on the way to the database
CanonicalUUID = Annotated[
    str, Field(pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
]


class SecurityEvent(Model):
    id: CanonicalUUID
    kind: EventKind  # type: ignore[valid-type]
    observed_at: AwareTime
    source: Annotated[str, Field(max_length=1024)] = ""
    message: Text = ""
    src_ip: IPAddress = None
    user: Short | None = None
    pid: Pid | None = None
    path: Text | None = None
    data: Annotated[dict[Annotated[str, Field(max_length=64)], JSONValue], Field(max_length=64)] = {}


class IngestBatch(Model):
    batch_id: UUID
    sent_at: UTCDatetime
    events: Annotated[list[SecurityEvent], Field(max_length=MAX_BATCH_EVENTS)] = []
    snapshots: Annotated[list[Snapshot], Field(max_length=MAX_BATCH_SNAPSHOTS)] = []


class IngestAck(Model):
    batch_id: UUID
    accepted_events: int
    duplicate_events: int
    accepted_snapshots: int
    duplicate_snapshots: int


class LiveQueryResult(Model):
    processes: Bounded[ProcessItem] = []
    connections: Bounded[ConnectionItem] = []


class TaskResult(Model):
    ok: bool
    error: Text | None = None
    result: LiveQueryResult | None = None
