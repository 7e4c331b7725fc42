"""Fixtures for notifications: a real webhook receiver, a real SMTP server, a tenant's outbox."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from tests.harness.pgcluster import free_port
from tests.server.notify.helpers import Inbox, Receiver, serving_receiver, smtp_inbox


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with serving_receiver() as rec:
        yield rec


@pytest.fixture
def settings(settings: Any) -> Any:
    """Small retry settings (tests run in seconds) and a loopback SMTP relay's address."""
    return settings.model_copy(update={
        "notify_max_attempts": 4, "notify_retry_base": 0.2, "notify_retry_cap": 1.0,
        "notify_interval": 0.02, "smtp_host": "127.0.0.1", "smtp_port": free_port(),
        "smtp_from": "vigil@example.org",
    })


@pytest.fixture
def smtp_server(settings: Any) -> Iterator[Inbox]:
    """A real SMTP server (aiosmtpd) on the port the settings name."""
    with smtp_inbox(settings.smtp_port) as inbox:
        yield inbox


@pytest.fixture
def api(app: Any, client: Any) -> Any:
    """The test client, with the app's own notifier stopped so tests drive sends themselves."""
    notifier = getattr(app.state, "notifier", None)
    if notifier is not None:
        notifier.stop()
    return client


@dataclass
class Outbox:
    """A tenant ("acme"), its admin and helpers to make channels and queue alerts."""

    db: Any
    settings: Any
    principal: Any
    tenant_id: int
    other_tenant_id: int

    def channel(self, kind: str, target: str, tenant: str = "acme", **kw: Any) -> Any:
        from vigil.server.services import notifications

        kw.setdefault("name", f"{kind}-{time.monotonic_ns()}")
        with self.db.write() as s:
            channel, _ = notifications.create_channel(
                s, principal=self.principal, settings=self.settings, kind=kind, target=target,
                tenant=tenant, **kw)
            return channel

    def alert(self, severity: str = "high", *, tenant_id: int | None = None,
              event: str = "alert.created", title: str = "Reverse shell") -> list[Any]:
        from vigil.server.services import notifications

        with self.db.write() as s:
            return notifications.enqueue(
                s, tenant_id=tenant_id or self.tenant_id, event=event, subject_type="alert",
                subject_id=42, severity=severity,
                payload={"title": title, "vm": {"id": 3, "name": "vm-web-1"},
                         "reason": "bash has a TCP socket to 203.0.113.9:4444 as stdin",
                         "techniques": ["T1059.004"], "src_ip": "203.0.113.9"})

    def deliveries(self) -> list[Any]:
        from sqlalchemy import select

        from vigil.server.db.models import NotificationDelivery

        with self.db.read() as s:
            return list(s.scalars(select(NotificationDelivery).order_by(NotificationDelivery.id)))


@pytest.fixture
def outbox(app: Any, settings: Any) -> Outbox:
    from vigil.server.services import auth, fleet
    from vigil.server.services.audit import SYSTEM
    from vigil.server.services.auth import Principal

    db = app.state.db
    with db.write() as s:
        acme = fleet.create_tenant(s, name="acme", actor=SYSTEM)
        globex = fleet.create_tenant(s, name="globex", actor=SYSTEM)
        user = auth.create_user(s, email="admin@example.org", password="admin-pass-1",
                                role="admin", tenant=None, actor=SYSTEM)
        principal = Principal(user.id, user.email, user.role, None)
        return Outbox(db, settings, principal, acme.id, globex.id)
