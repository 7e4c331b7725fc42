"""Who is calling: users (password, API token, portal session) and sensors (their token)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from vigil.errors import AuthError, Forbidden, InvalidInput, NotFound
from vigil.protocol import USER_ROLES
from vigil.server import security
from vigil.server.db.models import ApiToken, Sensor, Tenant, User, WebSession, utcnow
from vigil.server.services.audit import Actor, audit

#: what each role may do beyond reading its scope
WRITE_ROLES = {"admin", "csp"}
QUERY_ROLES = {"admin", "csp", "cirt"}


@dataclass(frozen=True)
class Principal:
    """An authenticated user. ``tenant_id`` None means every tenant (admins, global CIRT)."""

    user_id: int
    email: str
    role: str
    tenant_id: int | None
    client_ip: str | None = None

    @property
    def actor(self) -> Actor:
        return Actor("user", self.email, self.tenant_id, self.client_ip)

    def require(self, roles: set[str], what: str) -> None:
        if self.role not in roles:
            raise Forbidden(f"your role {self.role!r} may not {what}")

    def check_tenant(self, tenant_id: int) -> None:
        """Refuse (as not found, so nothing leaks) a record of another tenant."""
        if self.tenant_id is not None and self.tenant_id != tenant_id:
            raise NotFound("no such record")


@dataclass(frozen=True)
class SensorPrincipal:
    sensor_id: str
    tenant_id: int
    kind: str
    vm_id: int | None
    host_id: int | None
    client_ip: str | None = None

    @property
    def actor(self) -> Actor:
        return Actor("sensor", self.sensor_id, self.tenant_id, self.client_ip)


def _principal(user: User, client_ip: str | None) -> Principal:
    return Principal(user.id, user.email, user.role, user.tenant_id, client_ip)


def create_user(
    session: Session, *, email: str, password: str, role: str, tenant: str | None, actor: Actor
) -> User:
    if role not in USER_ROLES:
        raise InvalidInput(f"unknown role {role!r}: choose one of {', '.join(USER_ROLES)}")
    if len(password) < 8:
        raise InvalidInput("the password must have at least 8 characters")
    email = email.strip().lower()
    if "@" not in email:
        raise InvalidInput(f"{email!r} is not an e-mail address")
    if session.scalar(select(User.id).where(User.email == email)):
        raise InvalidInput(f"a user {email} exists already")
    tenant_id = None
    if tenant is not None:
        tenant_id = session.scalar(select(Tenant.id).where(Tenant.name == tenant))
        if tenant_id is None:
            raise NotFound(f"no tenant {tenant!r}: create it first")
    elif role == "csp":
        raise InvalidInput("a csp user belongs to a tenant: give --tenant")
    user = User(email=email, password_hash=security.hash_password(password), role=role,
                tenant_id=tenant_id)
    session.add(user)
    session.flush()
    audit(session, actor=actor, action="user.create", target_type="user", target_id=user.id,
          tenant_id=tenant_id, detail={"email": email, "role": role})
    return user


def login(session: Session, *, email: str, password: str, client_ip: str | None,
          hours: float) -> tuple[Principal, str]:
    """Check a password and open a portal session; failures are audited too."""
    user = session.scalar(select(User).where(User.email == email.strip().lower()))
    if user is None or user.disabled or not security.verify_password(password, user.password_hash):
        raise AuthError("wrong e-mail or password")  # the caller audits the failure
    token = security.new_token(security.SESSION_PREFIX)
    session.add(WebSession(user_id=user.id, token_hash=security.token_hash(token),
                           expires_at=utcnow() + timedelta(hours=hours)))
    principal = _principal(user, client_ip)
    audit(session, actor=principal.actor, action="auth.login", target_type="user",
          target_id=user.id)
    return principal, token


def logout(session: Session, *, token: str, principal: Principal) -> None:
    ws = session.scalar(select(WebSession).where(WebSession.token_hash == security.token_hash(token)))
    if ws is not None and ws.ended_at is None:
        ws.ended_at = utcnow()
    audit(session, actor=principal.actor, action="auth.logout", target_type="user",
          target_id=principal.user_id)


def principal_for_session(session: Session, *, token: str, client_ip: str | None) -> Principal:
    row = session.execute(
        select(User, WebSession)
        .join(WebSession, WebSession.user_id == User.id)
        .where(WebSession.token_hash == security.token_hash(token))
    ).first()
    if row is None:
        raise AuthError("not logged in")
    user, ws = row
    if ws.ended_at is not None or ws.expires_at < utcnow() or user.disabled:
        raise AuthError("your session has ended: log in again")
    return _principal(user, client_ip)


def create_api_token(session: Session, *, email: str, name: str, actor: Actor,
                     days: float | None = None) -> str:
    user = session.scalar(select(User).where(User.email == email.strip().lower()))
    if user is None:
        raise NotFound(f"no user {email!r}")
    token = security.new_token(security.API_PREFIX)
    expires = utcnow() + timedelta(days=days) if days else None
    row = ApiToken(user_id=user.id, token_hash=security.token_hash(token), name=name,
                   expires_at=expires)
    session.add(row)
    session.flush()
    audit(session, actor=actor, action="token.api.create", target_type="api_token",
          target_id=row.id, tenant_id=user.tenant_id, detail={"user": user.email, "name": name})
    return token


def principal_for_api_token(session: Session, *, token: str, client_ip: str | None) -> Principal:
    row = session.execute(
        select(User, ApiToken)
        .join(ApiToken, ApiToken.user_id == User.id)
        .where(ApiToken.token_hash == security.token_hash(token))
    ).first()
    if row is None:
        raise AuthError("unknown API token")
    user, tok = row
    if tok.revoked_at is not None:
        raise AuthError("this API token was revoked")
    if tok.expires_at is not None and tok.expires_at < utcnow():
        raise AuthError("this API token has expired: create a new one with `vigil token api`")
    if user.disabled:
        raise AuthError("this user is disabled")
    return _principal(user, client_ip)


def touch_sensor(session: Session, *, token: str, client_ip: str | None,
                 values: dict[str, Any]) -> SensorPrincipal:
    """Authenticate a sensor and update its row in one statement (the heartbeat's hot path).

    The UPDATE returns the stored hash; a wrong secret or a revoked sensor raises, and the
    caller's transaction rolls the update back.
    """
    parts = security.split_sensor_token(token)
    if parts is None:
        raise AuthError("not a sensor token")
    row = session.connection().execute(
        update(Sensor).where(Sensor.id == parts[0]).values(**values).returning(
            Sensor.secret_hash, Sensor.revoked_at, Sensor.tenant_id, Sensor.kind, Sensor.vm_id,
            Sensor.host_id)
    ).first()
    if row is None or not security.constant_time_equal(
        row.secret_hash, security.token_hash(parts[1])
    ):
        raise AuthError("unknown sensor: enroll again with a new enrollment token")
    if row.revoked_at is not None:
        raise AuthError("this sensor was revoked: enroll again with a new enrollment token")
    return SensorPrincipal(parts[0], row.tenant_id, row.kind, row.vm_id, row.host_id, client_ip)


def sensor_for_token(session: Session, *, token: str, client_ip: str | None) -> SensorPrincipal:
    """Authenticate a sensor on every call: a revoked sensor is refused at its next call."""
    parts = security.split_sensor_token(token)
    if parts is None:
        raise AuthError("not a sensor token")
    sensor = session.get(Sensor, parts[0])
    if sensor is None or not security.constant_time_equal(
        sensor.secret_hash, security.token_hash(parts[1])
    ):
        raise AuthError("unknown sensor: enroll again with a new enrollment token")
    if sensor.revoked_at is not None:
        raise AuthError("this sensor was revoked: enroll again with a new enrollment token")
    return SensorPrincipal(sensor.id, sensor.tenant_id, sensor.kind, sensor.vm_id, sensor.host_id,
                           client_ip)
