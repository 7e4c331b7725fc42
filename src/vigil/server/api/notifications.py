"""Notification channels (webhooks, e-mail), their signing secrets, tests and the delivery log."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field

from vigil.server.api.deps import Cursor, Db, Format, Limit, User, get_settings, list_response
from vigil.server.api.schemas import PageOf, PublicModel
from vigil.server.db.models import NotificationChannel, NotificationDelivery
from vigil.server.services import notifications
from vigil.server.services.auth import Principal

router = APIRouter(prefix="/api/v1/notifications", tags=["notifications"])

TenantFilter = Annotated[str | None, Query(description="only this tenant (admins)")]


class ChannelCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100)
    kind: str = Field(description="webhook or email", max_length=16)
    target: str = Field(min_length=1, max_length=2000,
                        description="the webhook URL, or e-mail addresses separated by commas")
    tenant: str | None = Field(None, description="the tenant (admins without a tenant)")
    min_severity: str = Field("high", description="low, medium, high or critical")
    on_alerts: bool = True
    on_incidents: bool = True
    enabled: bool = True


class ChannelPublic(PublicModel):
    id: int
    tenant_id: int
    name: str
    kind: str
    target: str = Field(description="redacted for the roles that may not manage channels")
    min_severity: str
    on_alerts: bool
    on_incidents: bool
    enabled: bool
    created_by: int | None
    created_at: datetime


class ChannelCreated(ChannelPublic):
    signing_secret: str | None = Field(
        description="webhooks: the key of X-Vigil-Signature (shown again only by /secret)")


class ChannelSecret(BaseModel):
    channel_id: int
    signing_secret: str


class DeliveryPublic(PublicModel):
    id: int
    tenant_id: int
    channel_id: int
    event: str
    subject_type: str
    subject_id: int
    payload: dict[str, Any]
    status: str = Field(description="pending, delivered or failed")
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    response_status: int | None
    created_at: datetime
    delivered_at: datetime | None


def _channel_dicts(principal: Principal) -> Any:
    def enrich(_session: Any, rows: list[NotificationChannel]) -> list[dict[str, Any]]:
        return [_public(r, principal).model_dump() for r in rows]

    return enrich


def _public(channel: NotificationChannel, principal: Principal) -> ChannelPublic:
    public = ChannelPublic.model_validate(channel)
    public.target = notifications.public_target(channel, principal)
    return public


@router.post("/channels", status_code=status.HTTP_201_CREATED)
def create_channel(body: ChannelCreate, request: Request, user: User, db: Db) -> ChannelCreated:
    """Create a channel (admin, csp). A webhook's signing secret is in the answer."""
    with db.write() as session:
        channel, secret = notifications.create_channel(
            session, principal=user, settings=get_settings(request), **body.model_dump())
        return ChannelCreated(**_public(channel, user).model_dump(), signing_secret=secret)


@router.get("/channels", response_model=PageOf[ChannelPublic])
def list_channels(user: User, db: Db, tenant: TenantFilter = None, limit: Limit = 100,
                  cursor: Cursor = None, format: Format = "json") -> Any:
    """The channels of the caller's tenant (every tenant's for admins)."""
    with db.read() as session:
        tenant_id = notifications.tenant_filter(session, user, tenant)
    return list_response(db, notifications.channels_query(user, tenant_id=tenant_id),
                         NotificationChannel.id, ChannelPublic, fmt=format, limit=limit,
                         cursor=cursor, filename="notification-channels",
                         enrich=_channel_dicts(user), principal=user)


@router.delete("/channels/{channel_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_channel(channel_id: int, user: User, db: Db) -> Response:
    """Delete a channel and its delivery log (admin, csp)."""
    with db.write() as session:
        notifications.delete_channel(session, principal=user, channel_id=channel_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/channels/{channel_id}/test")
def test_channel(channel_id: int, request: Request, user: User, db: Db) -> DeliveryPublic:
    """Send a test message now (admin, csp): the delivery says whether it arrived."""
    delivery = notifications.send_test(db, settings=get_settings(request), principal=user,
                                       channel_id=channel_id)
    return DeliveryPublic.model_validate(delivery)


@router.get("/channels/{channel_id}/secret")
def reveal_secret(channel_id: int, request: Request, user: User, db: Db) -> ChannelSecret:
    """A webhook channel's signing secret (admin, csp; audited)."""
    with db.write() as session:
        secret = notifications.reveal_secret(session, principal=user,
                                             settings=get_settings(request),
                                             channel_id=channel_id)
    return ChannelSecret(channel_id=channel_id, signing_secret=secret)


@router.get("/deliveries", response_model=PageOf[DeliveryPublic])
def list_deliveries(
    user: User, db: Db, channel_id: int | None = None,
    state: Annotated[str | None, Query(alias="status",
                                       description="pending, delivered or failed")] = None,
    tenant: TenantFilter = None, limit: Limit = 100, cursor: Cursor = None,
    format: Format = "json",
) -> Any:
    """The delivery log, newest first: every message, its attempts and the last error."""
    with db.read() as session:
        tenant_id = notifications.tenant_filter(session, user, tenant)
    stmt = notifications.deliveries_query(user, channel_id=channel_id, status=state,
                                          tenant_id=tenant_id)
    return list_response(db, stmt, NotificationDelivery.id, DeliveryPublic, fmt=format,
                         limit=limit, cursor=cursor, filename="notification-deliveries",
                         principal=user)
