"""The collector registry: each collector is a small class that registers itself.

A collector has a ``name``, an ``interval`` and a ``collect()`` method. ``produces`` says what
``collect()`` returns: ``"snapshot"`` (a list of items for the snapshot kind of the same name, or
None when the source is unavailable), ``"events"`` (a list of security events) or
``"resources"`` (a dict for heartbeats). Collectors never raise for what they cannot read: they
say so once, with a ``collector_error`` event, and carry on.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, ClassVar

from vigil.protocol import FAST_INTERVAL, HEARTBEAT_INTERVAL, INVENTORY_INTERVAL, PROCESS_INTERVAL

from ..events import make_event
from ..state import StateDir

#: The protocol's default interval of each interval group.
DEFAULT_INTERVALS: dict[str, float] = {
    "fast": FAST_INTERVAL,
    "process": PROCESS_INTERVAL,
    "inventory": INVENTORY_INTERVAL,
    "heartbeat": HEARTBEAT_INTERVAL,
}

AUTH_LOGS = ("/var/log/auth.log", "/var/log/secure")


@dataclass
class CollectorContext:
    """What collectors share: the state directory and the paths they watch.

    The path lists default (None) to the real system's; tests point them at temporary files.
    """

    state: StateDir
    extra_logs: list[str] = field(default_factory=list)
    auth_logs: tuple[str, ...] = AUTH_LOGS
    use_journal: bool = True
    passwd_path: str = "/etc/passwd"  # noqa: S105 - a path, not a password
    persistence_paths: list[str] | None = None
    integrity_logs: list[str] | None = None
    journal_dir: str | None = "/var/log/journal"
    dpkg_status: str = "/var/lib/dpkg/status"
    proc: str = "/proc"
    shared: dict[str, Any] = field(default_factory=dict)


class Collector:
    """Base of every collector; subclasses with a ``name`` register themselves."""

    registry: ClassVar[dict[str, type[Collector]]] = {}

    name: ClassVar[str] = ""
    produces: ClassVar[str] = "snapshot"
    interval_group: ClassVar[str] = "fast"
    #: Collect again soon after a process execs, changes uid or exits (when the kernel says so).
    wake_on_process_events: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.name:
            return
        if cls.name in Collector.registry and Collector.registry[cls.name] is not cls:
            raise ValueError(f"two collectors are named {cls.name!r}")
        if cls.produces not in ("snapshot", "events", "resources"):
            raise ValueError(f"collector {cls.name!r} produces an unknown {cls.produces!r}")
        Collector.registry[cls.name] = cls

    def __init__(self, context: CollectorContext) -> None:
        self.context = context
        #: Held while collecting, so a live query and the scheduler never overlap.
        self.lock = threading.Lock()
        #: Short descriptions of what this collector cannot read (shown in heartbeats).
        self.unreadable: set[str] = set()
        self._pending_events: list[dict[str, Any]] = []
        self._reported: set[str] = set()

    @property
    def interval(self) -> float:
        """The default interval, from the protocol constants of this collector's group."""
        return DEFAULT_INTERVALS[self.interval_group]

    def collect(self) -> Any:
        """Look at the system once; see the module docstring for what is returned."""
        raise NotImplementedError

    def watch_paths(self) -> list[str]:
        """Files and directories whose change should make this collector run at once."""
        return []

    def commit(self) -> None:
        """Remember progress (offsets, baselines) once the last results are safely spooled."""

    def close(self) -> None:
        """Release what the collector holds (files, subprocesses)."""

    def report(self, what: str, error: str, *, unreadable: bool = True) -> None:
        """Say once that ``what`` cannot be read or done, as a ``collector_error`` event."""
        if unreadable:
            self.unreadable.add(f"{self.name}: {what}"[:255])
        if what in self._reported:
            return
        self._reported.add(what)
        self._pending_events.append(
            make_event(
                "collector_error",
                source=f"collector:{self.name}",
                message=f"{self.name}: {what}: {error}",
                data={"collector": self.name, "what": what, "error": error},
            )
        )

    def take_events(self) -> list[dict[str, Any]]:
        """The collector_error events raised since the last call."""
        events, self._pending_events = self._pending_events, []
        return events


def create_collectors(context: CollectorContext, names: list[str] | None = None) -> list[Collector]:
    """One instance of each registered collector (or of those named), in registry order."""
    chosen = names if names is not None else list(Collector.registry)
    unknown = [name for name in chosen if name not in Collector.registry]
    if unknown:
        raise ValueError(f"unknown collectors: {', '.join(unknown)}")
    return [Collector.registry[name](context) for name in chosen]


class BaselineCollector(Collector):
    """A collector that compares files with a baseline kept in the state dir.

    The baseline is read at start; a scan leaves its result in ``_pending``, and only
    :meth:`commit` (called once the events are spooled) makes it the baseline on disk, so a
    crash between the two re-reports rather than loses a change.
    """

    #: file name of the baseline in the state dir
    state_file: ClassVar[str] = ""

    def __init__(self, context: CollectorContext) -> None:
        super().__init__(context)
        saved = context.state.read_json(self.state_file)
        files = saved.get("files") if isinstance(saved, dict) else None
        self._baseline: dict[str, dict[str, Any]] | None = files if isinstance(files, dict) else None
        self._pending: dict[str, dict[str, Any]] | None = None

    def commit(self) -> None:
        """Make the last scan the baseline."""
        if self._pending is not None:
            self._baseline, self._pending = self._pending, None
            self.context.state.write_json(self.state_file, {"files": self._baseline})
