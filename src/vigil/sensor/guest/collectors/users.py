"""Logged-in users (utmp), as ``psutil.users()`` reports them."""

from __future__ import annotations

from typing import Any

import psutil

from ..util import SHORT_MAX, clip, iso_from_epoch
from .base import Collector


class UsersCollector(Collector):
    """Login sessions (see ``vigil.protocol.models.UserSessionItem``)."""

    name = "users"
    produces = "snapshot"
    interval_group = "inventory"

    def collect(self) -> list[dict[str, Any]]:
        """One item per session; the key is name, terminal, host and start time."""
        try:
            sessions = psutil.users()
        except (OSError, psutil.Error) as exc:
            self.report("logged-in users (utmp)", str(exc))
            return []
        items: dict[str, dict[str, Any]] = {}
        for session in sessions:
            started = iso_from_epoch(session.started) if session.started else None
            key = f"{session.name}:{session.terminal}:{session.host}:{started}"
            items[key] = {
                "key": key[:600],
                "name": clip(session.name or "?", SHORT_MAX),
                "terminal": clip(session.terminal or None, SHORT_MAX),
                "host": clip(session.host or None, SHORT_MAX),
                "started": started,
                "pid": getattr(session, "pid", None),
            }
        return list(items.values())
