"""Hosts, VMs, sensors, enrollment tokens, inventory and live queries."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request, status

from vigil.protocol.models import ITEM_MODELS
from vigil.server.api.deps import Cursor, Db, Format, Limit, User, get_settings, list_response
from vigil.server.api.schemas import (
    EnrollTokenCreate,
    EnrollTokenPublic,
    HostCreate,
    HostPublic,
    InventoryItemPublic,
    MePublic,
    PageOf,
    SensorPublic,
    TaskStatus,
    VMCreate,
    VMPublic,
)
from vigil.server.db.models import VM, Host, InventoryItem, Sensor, Task, utcnow
from vigil.server.services import fleet, queries

router = APIRouter(prefix="/api/v1", tags=["fleet"])


@router.get("/me")
def me(user: User) -> MePublic:
    """Who the token or session belongs to."""
    return MePublic(user_id=user.user_id, email=user.email, role=user.role,
                    tenant_id=user.tenant_id)


@router.get("/hosts", response_model=PageOf[HostPublic])
def list_hosts(user: User, db: Db, limit: Limit = 100, cursor: Cursor = None,
               format: Format = "json") -> Any:
    """Hypervisor hosts of the caller's tenant (all tenants for admins)."""
    return list_response(db, queries.hosts_query(user), Host.id, HostPublic, fmt=format,
                         limit=limit, cursor=cursor, filename="hosts", principal=user)


@router.post("/hosts", status_code=status.HTTP_201_CREATED)
def create_host(body: HostCreate, user: User, db: Db) -> HostPublic:
    """Register a hypervisor host, with its site and location for the map."""
    with db.write() as session:
        host = fleet.create_host(session, principal=user, **body.model_dump())
        return HostPublic.model_validate(host)


@router.get("/hosts/{host_id}")
def get_host(host_id: int, user: User, db: Db) -> HostPublic:
    with db.read() as session:
        return HostPublic.model_validate(queries.get_scoped(session, user, Host, host_id))


def _with_status(request: Request, schema: type[Any], kind: str) -> Any:
    """Rows of VMs or sensors as public dicts, each with its status from heartbeats."""
    beats = get_settings(request).offline_after_beats

    def enrich(session: Any, rows: list[Any]) -> list[dict[str, Any]]:
        now = utcnow()
        by_vm = queries.sensors_by_vm(session, [r.id for r in rows]) if kind == "vm" else {}
        out = []
        for row in rows:
            d = {c: getattr(row, c) for c in schema.model_fields if hasattr(row, c)}
            if kind == "vm":
                sensors = by_vm.get(row.id, [])
                d["status"] = queries.vm_status(sensors, now=now, offline_after_beats=beats)
                d["last_seen_at"] = max((s.last_seen_at for s in sensors if s.last_seen_at),
                                        default=None)
            else:
                d["status"] = queries.sensor_status(row, now=now, offline_after_beats=beats)
            out.append(schema.model_validate(d).model_dump())
        return out

    return enrich


def _vm_dicts(request: Request) -> Any:
    return _with_status(request, VMPublic, "vm")


def _sensor_dicts(request: Request) -> Any:
    return _with_status(request, SensorPublic, "sensor")


@router.get("/vms", response_model=PageOf[VMPublic])
def list_vms(request: Request, user: User, db: Db, host_id: int | None = None,
             limit: Limit = 100, cursor: Cursor = None, format: Format = "json") -> Any:
    """Virtual machines, each with its status (online or offline, from heartbeats)."""
    return list_response(db, queries.vms_query(user, host_id=host_id), VM.id, VMPublic,
                         fmt=format, limit=limit, cursor=cursor, filename="vms",
                         enrich=_vm_dicts(request), principal=user)


@router.post("/vms", status_code=status.HTTP_201_CREATED)
def create_vm(body: VMCreate, request: Request, user: User, db: Db) -> VMPublic:
    """Register a VM (matched to one a sensor already reported, by machine id or SMBIOS UUID)."""
    with db.write() as session:
        vm = fleet.create_vm(session, principal=user, **body.model_dump())
        return VMPublic.model_validate(_vm_dicts(request)(session, [vm])[0])


@router.get("/vms/{vm_id}")
def get_vm(vm_id: int, request: Request, user: User, db: Db) -> VMPublic:
    with db.read() as session:
        vm = queries.get_scoped(session, user, VM, vm_id)
        return VMPublic.model_validate(_vm_dicts(request)(session, [vm])[0])


def _inventory_route(kind: str) -> None:
    def handler(vm_id: int, user: User, db: Db, history: bool = False,
                since: datetime | None = None, limit: Limit = 1000, cursor: Cursor = None,
                format: Format = "json") -> Any:
        with db.read() as session:
            vm = queries.get_scoped(session, user, VM, vm_id)
        stmt = queries.inventory_query(vm, kind, history=history, since=since)
        csv_columns = enrich = None
        if format == "csv":  # one column per field of the item, not a JSON blob
            csv_columns = ["first_seen", "removed_at", *ITEM_MODELS[kind].model_fields]

            def enrich(_session: Any, rows: list[InventoryItem]) -> list[dict[str, Any]]:
                return [{**r.data, "first_seen": r.first_seen, "removed_at": r.removed_at}
                        for r in rows]

        return list_response(db, stmt, InventoryItem.id, InventoryItemPublic, fmt=format,
                             limit=limit, cursor=cursor, filename=f"vm{vm_id}-{kind}",
                             principal=user, enrich=enrich, csv_columns=csv_columns)

    handler.__name__ = f"list_vm_{kind}"
    handler.__doc__ = (f"The VM's {kind}: the latest inventory, or with ?history=true every "
                       "version with when it appeared and disappeared.")
    router.get(f"/vms/{{vm_id}}/{kind}", response_model=PageOf[InventoryItemPublic])(handler)


for _kind in queries.INVENTORY_KINDS:
    _inventory_route(_kind)


@router.post("/vms/{vm_id}/live-query", status_code=status.HTTP_202_ACCEPTED)
def live_query(vm_id: int, request: Request, user: User, db: Db) -> TaskStatus:
    """Ask the VM's guest sensor for its current processes and connections, now."""
    with db.write() as session:
        task = queries.request_live_query(
            session, principal=user, vm_id=vm_id,
            offline_after_beats=get_settings(request).offline_after_beats)
        return TaskStatus.model_validate(task)


@router.get("/tasks/{task_id}")
def get_task(task_id: int, user: User, db: Db) -> TaskStatus:
    """A task's status and, once done, its result."""
    with db.read() as session:
        return TaskStatus.model_validate(queries.get_scoped(session, user, Task, task_id))


@router.get("/sensors", response_model=PageOf[SensorPublic])
def list_sensors(request: Request, user: User, db: Db, vm_id: int | None = None,
                 limit: Limit = 100, cursor: Cursor = None, format: Format = "json") -> Any:
    """Enrolled sensors with their status and last resource usage."""
    return list_response(db, queries.sensors_query(user, vm_id=vm_id), Sensor.id, SensorPublic,
                         fmt=format, limit=limit, cursor=cursor, filename="sensors",
                         enrich=_sensor_dicts(request), principal=user)


@router.post("/sensors/{sensor_id}/revoke")
def revoke_sensor(sensor_id: str, request: Request, user: User, db: Db) -> SensorPublic:
    """Revoke a sensor: its next call is refused."""
    with db.write() as session:
        sensor = fleet.revoke_sensor(session, sensor_id=sensor_id, principal=user)
        return SensorPublic.model_validate(_sensor_dicts(request)(session, [sensor])[0])


@router.post("/enrollment-tokens", status_code=status.HTTP_201_CREATED)
def create_enrollment_token(body: EnrollTokenCreate, user: User, db: Db) -> EnrollTokenPublic:
    """A one-time, expiring enrollment token for a tenant (shown once)."""
    user.require({"admin", "csp"}, "create enrollment tokens")
    with db.write() as session:
        token, expires = fleet.create_enrollment_token(
            session, tenant=body.tenant, actor=user.actor, created_by=user.user_id,
            ttl_hours=body.ttl_hours)
    return EnrollTokenPublic(token=token, tenant=body.tenant, expires_at=expires)
