"""Tenants, hypervisor hosts, VMs and sensors: registration, enrollment, revocation, status."""

from __future__ import annotations

import re
import secrets
import uuid
from datetime import datetime, timedelta

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from vigil.errors import AuthError, Conflict, InvalidInput, NotFound
from vigil.protocol.models import EnrollRequest, EnrollResponse
from vigil.server import security
from vigil.server.db.models import VM, EnrollmentToken, Host, Sensor, Tenant, utcnow
from vigil.server.services.audit import Actor, audit
from vigil.server.services.auth import Principal

_TENANT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


def create_tenant(session: Session, *, name: str, display_name: str = "", actor: Actor) -> Tenant:
    if not _TENANT_NAME.match(name):
        raise InvalidInput(
            f"tenant name {name!r}: use 1-64 lowercase letters, digits, '-' or '_'"
        )
    if session.scalar(select(Tenant.id).where(Tenant.name == name)):
        raise Conflict(f"tenant {name!r} exists already")
    tenant = Tenant(name=name, display_name=display_name or name)
    session.add(tenant)
    session.flush()
    audit(session, actor=actor, action="tenant.create", target_type="tenant",
          target_id=tenant.id, tenant_id=tenant.id, detail={"name": name})
    return tenant


def tenant_by_name(session: Session, name: str) -> Tenant:
    tenant = session.scalar(select(Tenant).where(Tenant.name == name))
    if tenant is None:
        raise NotFound(f"no tenant {name!r}")
    return tenant


def create_enrollment_token(
    session: Session, *, tenant: str, actor: Actor, created_by: int | None = None,
    ttl_hours: float = 24.0,
) -> tuple[str, datetime]:
    """A one-time token bound to a tenant; only its hash is kept."""
    t = tenant_by_name(session, tenant)
    if actor.tenant_id is not None and actor.tenant_id != t.id:
        raise NotFound(f"no tenant {tenant!r}")
    if ttl_hours <= 0:
        raise InvalidInput("the token's lifetime must be positive")
    token = security.new_token(security.ENROLL_PREFIX)
    expires = utcnow() + timedelta(hours=ttl_hours)
    row = EnrollmentToken(tenant_id=t.id, token_hash=security.token_hash(token),
                          created_by=created_by, expires_at=expires)
    session.add(row)
    session.flush()
    audit(session, actor=actor, action="token.enroll.create", target_type="enrollment_token",
          target_id=row.id, tenant_id=t.id, detail={"expires_at": expires.isoformat()})
    return token, expires


def _match_vm(session: Session, tenant_id: int, req: EnrollRequest) -> VM | None:
    """The VM a new sensor reports for: by machine id or SMBIOS UUID, within its tenant."""
    conds = []
    if req.machine_id:
        conds.append(VM.machine_id == req.machine_id.lower())
    if req.smbios_uuid:
        conds.append(VM.smbios_uuid == str(req.smbios_uuid).lower())
    if not conds:
        return None
    return session.scalar(
        select(VM).where(VM.tenant_id == tenant_id, or_(*conds)).order_by(VM.id).limit(1)
    )


def enroll(
    session: Session, *, req: EnrollRequest, client_ip: str | None, heartbeat_interval: float
) -> EnrollResponse:
    """Exchange a one-time enrollment token for a sensor id and secret."""
    row = session.scalar(
        select(EnrollmentToken).where(
            EnrollmentToken.token_hash == security.token_hash(req.enroll_token)
        )
    )
    reason = None
    if row is None:
        reason = "unknown enrollment token"
    elif row.used_at is not None:
        reason = "this enrollment token was used already: create a new one with `vigil token enroll`"
    elif row.expires_at < utcnow():
        reason = "this enrollment token has expired: create a new one with `vigil token enroll`"
    if reason or row is None:
        raise AuthError(reason or "unknown enrollment token")  # the router audits the failure
    sensor_id = str(uuid.uuid4())
    secret = secrets.token_urlsafe(32)
    vm_id = host_id = None
    if req.kind == "guest":
        vm = _match_vm(session, row.tenant_id, req)
        if vm is None:
            vm = VM(tenant_id=row.tenant_id, name=req.hostname,
                    machine_id=req.machine_id.lower() if req.machine_id else None,
                    smbios_uuid=str(req.smbios_uuid).lower() if req.smbios_uuid else None)
            session.add(vm)
        vm.os = req.os or vm.os
        vm.kernel = req.kernel or vm.kernel
        vm.machine_id = vm.machine_id or (req.machine_id.lower() if req.machine_id else None)
        vm.smbios_uuid = vm.smbios_uuid or (str(req.smbios_uuid).lower() if req.smbios_uuid else None)
        session.flush()
        vm_id = vm.id
    else:
        host = session.scalar(
            select(Host).where(Host.tenant_id == row.tenant_id, Host.name == req.hostname)
        )
        if host is None:
            host = Host(tenant_id=row.tenant_id, name=req.hostname)
            session.add(host)
            session.flush()
        host_id = host.id
    session.add(Sensor(
        id=sensor_id, tenant_id=row.tenant_id, kind=req.kind,
        secret_hash=security.token_hash(secret), hostname=req.hostname, vm_id=vm_id,
        host_id=host_id, version=req.sensor_version, privileged=req.privileged,
        heartbeat_interval=heartbeat_interval,
    ))
    row.used_at = utcnow()
    row.sensor_id = sensor_id
    tenant = session.get(Tenant, row.tenant_id)
    audit(session, actor=Actor("sensor", sensor_id, row.tenant_id, client_ip),
          action="sensor.enroll", target_type="sensor", target_id=sensor_id,
          detail={"kind": req.kind, "hostname": req.hostname, "vm_id": vm_id, "host_id": host_id})
    return EnrollResponse(
        sensor_id=uuid.UUID(sensor_id), token=security.sensor_token(sensor_id, secret),
        tenant=tenant.name if tenant else "", vm_id=vm_id, host_id=host_id,
        heartbeat_interval=heartbeat_interval,
    )


def revoke_sensor(session: Session, *, sensor_id: str, principal: Principal) -> Sensor:
    principal.require({"admin", "csp"}, "revoke sensors")
    sensor = session.get(Sensor, sensor_id)
    if sensor is None:
        raise NotFound(f"no sensor {sensor_id}")
    principal.check_tenant(sensor.tenant_id)
    if sensor.revoked_at is None:
        sensor.revoked_at = utcnow()
    audit(session, actor=principal.actor, action="sensor.revoke", target_type="sensor",
          target_id=sensor_id, tenant_id=sensor.tenant_id)
    return sensor


def _tenant_for_create(session: Session, principal: Principal, tenant: str | None) -> int:
    principal.require({"admin", "csp"}, "register hosts or VMs")
    if tenant is None:
        if principal.tenant_id is None:
            raise InvalidInput("say which tenant this belongs to (field 'tenant')")
        return principal.tenant_id
    t = tenant_by_name(session, tenant)
    principal.check_tenant(t.id)
    return t.id


def create_host(
    session: Session, *, principal: Principal, name: str, tenant: str | None = None,
    site: str = "", country: str = "", latitude: float | None = None,
    longitude: float | None = None,
) -> Host:
    tenant_id = _tenant_for_create(session, principal, tenant)
    if session.scalar(select(Host.id).where(Host.tenant_id == tenant_id, Host.name == name)):
        raise Conflict(f"host {name!r} exists already")
    host = Host(tenant_id=tenant_id, name=name, site=site, country=country.upper(),
                latitude=latitude, longitude=longitude)
    session.add(host)
    session.flush()
    audit(session, actor=principal.actor, action="host.create", target_type="host",
          target_id=host.id, tenant_id=tenant_id, detail={"name": name, "site": site})
    return host


def create_vm(
    session: Session, *, principal: Principal, name: str, tenant: str | None = None,
    host_id: int | None = None, machine_id: str | None = None, smbios_uuid: str | None = None,
) -> VM:
    tenant_id = _tenant_for_create(session, principal, tenant)
    if host_id is not None:
        host = session.get(Host, host_id)
        if host is None or host.tenant_id != tenant_id:
            raise NotFound(f"no host {host_id} in this tenant")
    conds = []
    if machine_id:
        conds.append(VM.machine_id == machine_id.lower())
    if smbios_uuid:
        conds.append(VM.smbios_uuid == smbios_uuid.lower())
    vm = None
    if conds:
        vm = session.scalar(select(VM).where(VM.tenant_id == tenant_id, or_(*conds)).limit(1))
    if vm is None:
        vm = VM(tenant_id=tenant_id, name=name, host_id=host_id,
                machine_id=machine_id.lower() if machine_id else None,
                smbios_uuid=smbios_uuid.lower() if smbios_uuid else None)
        session.add(vm)
    else:  # a sensor saw it first: register it rather than duplicate it
        vm.name, vm.host_id = name, host_id if host_id is not None else vm.host_id
    session.flush()
    audit(session, actor=principal.actor, action="vm.create", target_type="vm",
          target_id=vm.id, tenant_id=tenant_id, detail={"name": name, "host_id": host_id})
    return vm
