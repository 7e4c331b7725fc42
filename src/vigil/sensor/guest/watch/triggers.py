"""One thread that turns kernel notifications into early collections.

Process events (exec, uid/gid change, exit) wake the collectors that look at processes and
sockets, a short while after the first event so that a burst (a shell pipeline, a build) costs
one scan; file changes under the watched paths wake the collector that watches them at once.
The schedule (:class:`vigil.sensor.guest.schedule.Schedule`) caps how often a collector may run,
so a busy machine cannot make the sensor burn CPU. Whatever the kernel refuses is left to the
scheduled polling.
"""

from __future__ import annotations

import logging
import os
import select
import stat
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from . import inotify
from .proc_connector import ProcConnector

log = logging.getLogger(__name__)

#: Seconds between the first process event and the scan it causes (a burst is coalesced).
PROCESS_DEBOUNCE = 0.15
#: Seconds to stop reading process events after one arrived (they are drained afterwards).
PROCESS_MUTE = 0.2
#: Seconds after the last process event when processes and sockets are looked at once more:
#: what a new program does just after exec (connect, dup2 a socket onto its stdio) shows then.
PROCESS_FOLLOWUP = 0.7
#: Seconds between a file change and its collection (lets a writer finish a few lines).
FILE_DEBOUNCE = 0.03
#: The watches are rebuilt this often (new homes, new files) and soon after a file appears.
REFRESH_EVERY = 60.0
REFRESH_AFTER_CHANGE = 0.5
MAX_WATCHES = 4096
MAX_SUBDIRS = 256

Wake = Callable[[Iterable[str], float], None]
STRUCTURAL = (
    inotify.IN_CREATE
    | inotify.IN_DELETE
    | inotify.IN_MOVED_FROM
    | inotify.IN_MOVED_TO
    | inotify.IN_DELETE_SELF
    | inotify.IN_MOVE_SELF
    | inotify.IN_IGNORED
)


@dataclass
class _Interest:
    collector: str
    mask: int
    names: set[str] | None  # None: any name (or the watched object itself)


@dataclass
class _Watch:
    path: str
    mask: int = 0
    interests: list[_Interest] = field(default_factory=list)


def plan_watches(paths_by_collector: dict[str, list[str]]) -> dict[tuple[int, int], _Watch]:
    """What to watch, keyed by (device, inode): each path, its subdirectories, and the nearest
    existing directory above it (for the path's name appearing, vanishing or being replaced)."""
    plan: dict[tuple[int, int], _Watch] = {}

    def add(path: str, mask: int, collector: str, names: set[str] | None) -> None:
        if len(plan) >= MAX_WATCHES:
            return
        try:
            st = os.stat(path)
        except OSError:
            return
        watch = plan.setdefault((st.st_dev, st.st_ino), _Watch(path))
        watch.mask |= mask
        watch.interests.append(_Interest(collector, mask, names))

    for collector, paths in paths_by_collector.items():
        for path in dict.fromkeys(paths):
            try:
                st = os.lstat(path)
            except OSError:
                st = None
            if st is not None and stat.S_ISDIR(st.st_mode):
                add(path, inotify.DIR_CHANGES, collector, None)
                try:
                    subdirs = [e.path for e in os.scandir(path) if e.is_dir(follow_symlinks=False)]
                except OSError:
                    subdirs = []
                for subdir in subdirs[:MAX_SUBDIRS]:
                    add(subdir, inotify.DIR_CHANGES, collector, None)
            elif st is not None and not stat.S_ISLNK(st.st_mode):
                add(path, inotify.FILE_CHANGES, collector, None)
            child, parent = os.path.basename(path), os.path.dirname(path)
            while parent and parent != child:
                if os.path.isdir(parent):
                    add(parent, inotify.DIR_ENTRIES, collector, {child})
                    break
                child, parent = os.path.basename(parent), os.path.dirname(parent)
    return plan


class Triggers:
    """Watches process events and files in a thread of its own; calls ``wake`` on changes."""

    #: when processes and sockets are looked at once more (0: not planned)
    _followup_at: float = 0.0

    def __init__(
        self,
        wake: Wake,
        *,
        process_collectors: list[str],
        watched_paths: Callable[[], dict[str, list[str]]],
        use_proc_connector: bool = True,
        use_inotify: bool = True,
    ) -> None:
        self.wake = wake
        self.process_collectors = process_collectors
        self.watched_paths = watched_paths
        self.proc: ProcConnector | None = None
        self.inotify: inotify.Inotify | None = None
        #: What works and what does not, for the sensor_started event and the log.
        self.status: dict[str, str] = {}
        self._watches: dict[int, _Watch] = {}
        self._stop_r, self._stop_w = os.pipe()
        self._thread: threading.Thread | None = None
        if use_proc_connector and process_collectors:
            try:
                self.proc = ProcConnector.open()
                self.status["process_events"] = "proc connector"
            except OSError as exc:
                self.status["process_events"] = f"polling ({exc.strerror or exc})"
        if use_inotify:
            try:
                self.inotify = inotify.Inotify()
                self.status["file_events"] = "inotify"
            except OSError as exc:
                self.status["file_events"] = f"polling ({exc.strerror or exc})"

    def start(self) -> None:
        """Start watching (returns at once)."""
        self.refresh()
        self._thread = threading.Thread(target=self._run, name="vigil-triggers", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and release the kernel resources."""
        os.write(self._stop_w, b"x")
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.proc is not None:
            self.proc.close()
        if self.inotify is not None:
            self.inotify.close()
        os.close(self._stop_r)
        os.close(self._stop_w)

    def refresh(self) -> None:
        """Rebuild the file watches from the collectors' current paths."""
        if self.inotify is None:
            return
        try:
            plan = plan_watches(self.watched_paths())
        except Exception:  # a collector's path list must not kill the watcher
            log.debug("cannot list the watched paths", exc_info=True)
            return
        watches: dict[int, _Watch] = {}
        for watch in plan.values():
            try:
                wd = self.inotify.add_watch(watch.path, watch.mask)
            except OSError as exc:
                log.debug("cannot watch %s: %s", watch.path, exc)
                continue
            if wd in watches:  # the same inode by another path: merge
                watches[wd].interests.extend(watch.interests)
                watches[wd].mask |= watch.mask
                self.inotify.add_watch(watch.path, watches[wd].mask)
            else:
                watches[wd] = watch
        for wd in set(self._watches) - set(watches):
            self.inotify.remove_watch(wd)
        self._watches = watches

    # --- the thread ----------------------------------------------------------------------

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._stop_r, select.POLLIN)
        if self.inotify is not None:
            poller.register(self.inotify.fileno(), select.POLLIN)
        if self.proc is not None:
            poller.register(self.proc.fileno(), select.POLLIN)
        proc_muted_until = 0.0
        next_refresh = time.monotonic() + REFRESH_EVERY
        self._followup_at = 0.0
        while True:
            now = time.monotonic()
            if self.proc is not None and proc_muted_until and now >= proc_muted_until:
                proc_muted_until = 0.0
                self._on_process_events()
                poller.register(self.proc.fileno(), select.POLLIN)
            if self._followup_at and now >= self._followup_at:
                self._followup_at = 0.0
                self.wake(self.process_collectors, 0.0)
            deadline = min(next_refresh, proc_muted_until or next_refresh,
                           self._followup_at or next_refresh)
            ready = poller.poll(max(0, int((deadline - now) * 1000) + 1))
            fds = {fd for fd, _ in ready}
            if self._stop_r in fds:
                return
            if self.proc is not None and self.proc.fileno() in fds and self._on_process_events():
                poller.unregister(self.proc.fileno())  # drain the rest of a burst later
                proc_muted_until = time.monotonic() + PROCESS_MUTE
            inotify_ready = self.inotify is not None and self.inotify.fileno() in fds
            if inotify_ready and self._on_file_events():
                next_refresh = min(next_refresh, time.monotonic() + REFRESH_AFTER_CHANGE)
            if time.monotonic() >= next_refresh:
                self.refresh()
                next_refresh = time.monotonic() + REFRESH_EVERY

    def _on_process_events(self) -> bool:
        assert self.proc is not None
        try:
            events = self.proc.read()
        except OSError:
            log.debug("reading process events failed", exc_info=True)
            events = []
        changed = bool(events) or self.proc.overflowed  # lost events: rescan to be sure
        self.proc.overflowed = False
        if changed:
            self.wake(self.process_collectors, PROCESS_DEBOUNCE)
            self._followup_at = time.monotonic() + PROCESS_FOLLOWUP
        return changed

    def _on_file_events(self) -> bool:
        """Wake the collectors concerned; returns whether the watches need a refresh."""
        assert self.inotify is not None
        woken: set[str] = set()
        structural = False
        for event in self.inotify.read():
            if event.mask & inotify.IN_Q_OVERFLOW:
                woken.update(i.collector for w in self._watches.values() for i in w.interests)
                structural = True
                continue
            watch = self._watches.get(event.wd)
            if watch is None:
                continue
            for interest in watch.interests:
                if not event.mask & interest.mask:
                    continue
                if interest.names is None or event.name in interest.names:
                    woken.add(interest.collector)
                    structural = structural or bool(event.mask & STRUCTURAL)
            if event.mask & inotify.IN_IGNORED:
                structural = True
        if woken:
            self.wake(sorted(woken), FILE_DEBOUNCE)
        return structural
