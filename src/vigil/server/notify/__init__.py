"""Notifications: channels (webhook, e-mail) and the dispatcher that sends the outbox.

Importing the package registers the built-in channel kinds.
"""

from __future__ import annotations

from vigil.server.notify import email, webhook  # noqa: F401  (register the channel kinds)
from vigil.server.notify.base import (
    EVENTS,
    SEVERITIES,
    TEST_EVENT,
    Channel,
    Message,
    Outcome,
    channel_class,
    make_channel,
    severity_rank,
)

__all__ = [
    "EVENTS",
    "SEVERITIES",
    "TEST_EVENT",
    "Channel",
    "Message",
    "Outcome",
    "channel_class",
    "make_channel",
    "severity_rank",
]
