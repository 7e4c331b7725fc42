"""Decoys: a fake SSH server, a fake admin console and canary files, run inside the sensor.

Nobody legitimate connects to a decoy port or opens a canary, so each touch is worth an event:
``decoy_connection``, ``decoy_login`` and ``canary_accessed``. :class:`Decoys` starts what
:class:`DecoySettings` asks for and reports through ``emit`` (the sensor spools the event and
sends it at once); a port that cannot be bound or a canary that cannot be planted is reported
once as a ``collector_error`` event, and the rest carries on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from ..events import make_event
from ..state import StateDir
from .canary import CanaryWatch
from .listeners import DecoyListeners, Emit
from .protocols import AdminLogin, SshBanner

log = logging.getLogger(__name__)

DEFAULT_SSH_PORT = 2222
DEFAULT_HTTP_PORT = 8081
DEFAULT_BIND = "0.0.0.0"  # noqa: S104 - a decoy is meant to be reached


@dataclass
class DecoySettings:
    """Which decoys run; a port of None turns that listener off (0: any free port)."""

    bind: str = DEFAULT_BIND
    ssh_port: int | None = DEFAULT_SSH_PORT
    http_port: int | None = DEFAULT_HTTP_PORT
    #: Canaries named by the operator: planted when missing, watched even if they existed.
    canaries: list[str] = field(default_factory=list)
    #: Default canaries: planted when missing, skipped when someone else's file is there.
    default_canaries: list[str] = field(default_factory=list)
    use_inotify: bool = True
    poll_interval: float = 2.0


class Decoys:
    """The running decoys."""

    def __init__(self, settings: DecoySettings, state: StateDir, emit: Emit) -> None:
        self.settings = settings
        self.state = state
        self.emit = emit
        self.listeners: DecoyListeners | None = None
        self.canaries: CanaryWatch | None = None

    @property
    def ports(self) -> dict[str, int]:
        """The ports bound, by decoy name ("ssh", "http")."""
        return dict(self.listeners.ports) if self.listeners else {}

    def start(self) -> None:
        """Bind the listeners, plant the canaries and start their threads."""
        settings = self.settings
        self.listeners = DecoyListeners(self.emit)
        for protocol, port in ((SshBanner(), settings.ssh_port), (AdminLogin(), settings.http_port)):
            if port is None:
                continue
            try:
                self.listeners.listen(protocol, settings.bind, port)
            except OSError as exc:
                self._error(f"{protocol.name} decoy on {settings.bind}:{port}", exc.strerror or str(exc))
        self.listeners.start()
        if settings.canaries or settings.default_canaries:
            self.canaries = CanaryWatch(
                self.state,
                self.emit,
                canaries=settings.canaries,
                defaults=settings.default_canaries,
                use_inotify=settings.use_inotify,
                poll_interval=settings.poll_interval,
            )
            for error in self.canaries.errors:
                self._error("canary", error)
            self.canaries.start()
        log.info(
            "decoys: %s; canaries: %s",
            ", ".join(f"{k} on port {v}" for k, v in self.ports.items()) or "no listener",
            ", ".join(self.canaries.paths) if self.canaries else "none",
        )

    def stop(self) -> None:
        """Stop listening and watching."""
        if self.listeners is not None:
            self.listeners.stop()
            self.listeners = None
        if self.canaries is not None:
            self.canaries.stop()
            self.canaries = None

    def _error(self, what: str, error: str) -> None:
        log.warning("decoys: %s: %s", what, error)
        self.emit(
            make_event(
                "collector_error",
                source="decoys",
                message=f"decoys: {what}: {error}",
                data={"collector": "decoys", "what": what, "error": error},
            )
        )
