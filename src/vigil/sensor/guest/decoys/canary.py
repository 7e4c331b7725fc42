"""Canary files: planted credentials nobody has a reason to open.

The sensor plants each canary (mode 0600, plausible fake content) unless a file is already
there, remembers which ones it planted in its state directory, and watches them with inotify:
opening, reading, changing, moving or deleting one is a ``canary_accessed`` event, with the
process that holds it open when that can still be found. Without inotify the files are polled:
their size, mtime and inode, and their atime — planted older than the mtime so that even a
``relatime`` mount updates it on the next read; it is set back after each report.

Canaries live while the sensor runs, like the decoy listeners: a clean stop removes the files
it planted and the directories it made for them (a killed sensor leaves them, and the next
start adopts them again). Files it did not plant are never touched.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import secrets
import select
import string
import threading
import time
from collections.abc import Callable
from typing import Any

from ..events import make_event
from ..state import StateDir
from ..watch import inotify
from .ratelimit import RateLimiter, Verdict

log = logging.getLogger(__name__)

STATE_FILE = "canaries.json"
CANARY_MASK = (
    inotify.IN_OPEN
    | inotify.IN_ACCESS
    | inotify.IN_MODIFY
    | inotify.IN_ATTRIB
    | inotify.IN_DELETE_SELF
    | inotify.IN_MOVE_SELF
)
#: Seconds during which the events of one access (open, read, close) make one report.
COALESCE = 0.3
AGE = 40 * 86400
_HOWS = (  # strongest first
    (inotify.IN_DELETE_SELF, "deleted"),
    (inotify.IN_MOVE_SELF, "moved"),
    (inotify.IN_MODIFY, "modified"),
    (inotify.IN_ATTRIB, "modified"),
    (inotify.IN_ACCESS, "read"),
    (inotify.IN_OPEN, "opened"),
)
Emit = Callable[[dict[str, Any]], None]


def fake_content(path: str) -> bytes:
    """Plausible, worthless secrets for a canary named like ``path``."""
    name = os.path.basename(path).lower()
    alphabet = string.ascii_uppercase + string.digits
    if "id_" in name or "key" in name:
        blob = base64.b64encode(secrets.token_bytes(1200)).decode()
        lines = [blob[i : i + 70] for i in range(0, len(blob), 70)]
        return (
            "-----BEGIN OPENSSH PRIVATE KEY-----\n"
            + "\n".join(lines)
            + "\n-----END OPENSSH PRIVATE KEY-----\n"
        ).encode()
    if "credential" in name or "aws" in path.lower():
        key_id = "AKIA" + "".join(secrets.choice(alphabet) for _ in range(16))
        secret = base64.b64encode(secrets.token_bytes(30)).decode()
        return f"[default]\naws_access_key_id = {key_id}\naws_secret_access_key = {secret}\n".encode()
    password = secrets.token_urlsafe(12)
    return f"# production database\nDB_HOST=10.0.3.12\nDB_USER=admin\nDB_PASSWORD={password}\n".encode()


def _missing_dirs(path: str) -> list[str]:
    """The ancestors of ``path`` that do not exist yet, deepest first."""
    missing = []
    parent = os.path.dirname(path)
    while parent and not os.path.exists(parent):
        missing.append(parent)
        parent = os.path.dirname(parent)
    return missing


def plant(path: str, made_dirs: list[str] | None = None) -> bool:
    """Create the canary ``path`` (never over an existing file); returns whether it did.

    Directories created on the way are appended to ``made_dirs``, deepest first.
    """
    missing = _missing_dirs(path)
    os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
    if made_dirs is not None:
        made_dirs.extend(missing)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as handle:
        handle.write(fake_content(path))
    rearm(path, time.time_ns() - AGE * 10**9)
    return True


def rearm(path: str, mtime_ns: int | None = None) -> None:
    """Set the atime a day before the mtime, so that the next read updates it (relatime)."""
    if mtime_ns is None:
        mtime_ns = os.stat(path).st_mtime_ns
    os.utime(path, ns=(mtime_ns - 86400 * 10**9, mtime_ns), follow_symlinks=False)


def holders(path: str, proc: str = "/proc") -> list[tuple[int, str]]:
    """The processes (pid, name) that have ``path`` open now, the sensor excepted."""
    found = []
    me = os.getpid()
    for name in os.listdir(proc):
        if not name.isdigit() or int(name) == me:
            continue
        fd_dir = f"{proc}/{name}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"{fd_dir}/{fd}")
            except OSError:
                continue
            if target == path or target == path + " (deleted)":
                try:
                    with open(f"{proc}/{name}/comm", encoding="utf-8", errors="replace") as handle:
                        comm = handle.read().strip()
                except OSError:
                    comm = "?"
                found.append((int(name), comm))
                break
    return found


class CanaryWatch:
    """Plants and watches canary files in a thread of its own."""

    def __init__(
        self,
        state: StateDir,
        emit: Emit,
        *,
        canaries: list[str],
        defaults: list[str] | None = None,
        use_inotify: bool = True,
        poll_interval: float = 2.0,
    ) -> None:
        self.state = state
        self.emit = emit
        self.poll_interval = poll_interval
        self.limiter = RateLimiter(limit=10, window=60.0)
        saved = state.read_json(STATE_FILE, {})
        saved = saved if isinstance(saved, dict) else {}
        self.planted: list[str] = list(saved.get("planted", []))
        self.made_dirs: list[str] = list(saved.get("dirs", []))
        self.paths: list[str] = []
        self.errors: list[str] = []
        for path in dict.fromkeys(os.path.abspath(p) for p in canaries):
            self._arm(path, keep_foreign=True)
        for path in dict.fromkeys(os.path.abspath(p) for p in defaults or []):
            self._arm(path, keep_foreign=False)
        self._save()
        self.inotify: inotify.Inotify | None = None
        if use_inotify:
            try:
                self.inotify = inotify.Inotify()
            except OSError as exc:
                log.info("no inotify (%s): canaries are polled", exc)
        self._wds: dict[int, str] = {}
        self._stats: dict[str, os.stat_result] = {}
        self._stop_r, self._stop_w = os.pipe()
        self._thread: threading.Thread | None = None

    def _save(self) -> None:
        self.state.write_json(STATE_FILE, {"planted": self.planted, "dirs": self.made_dirs})

    def _arm(self, path: str, *, keep_foreign: bool) -> None:
        try:
            if plant(path, self.made_dirs):
                self.planted.append(path)
            elif path not in self.planted and not keep_foreign:
                return  # a default path holding someone's real file: leave it alone
        except OSError as exc:
            self.errors.append(f"cannot plant the canary {path}: {exc.strerror or exc}")
            return
        self.paths.append(path)

    # --- life cycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Start watching (the canaries are planted already)."""
        for path in self.paths:
            self._watch(path)
        self._thread = threading.Thread(target=self._run, name="vigil-canaries", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop watching, then remove the canaries this sensor planted (a clean stop)."""
        os.write(self._stop_w, b"x")
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.inotify is not None:
            self.inotify.close()
        os.close(self._stop_r)
        os.close(self._stop_w)
        self.remove_planted()

    def remove_planted(self) -> None:
        for path in self.planted:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("cannot remove the canary %s: %s", path, exc)
        for directory in self.made_dirs:  # deepest first; one not empty now stays
            with contextlib.suppress(OSError):
                os.rmdir(directory)
        self.planted, self.made_dirs = [], []
        try:
            self._save()
        except OSError as exc:
            log.warning("cannot save the canary state: %s", exc)

    def _watch(self, path: str) -> None:
        if self.inotify is not None:
            try:
                self._wds[self.inotify.add_watch(path, CANARY_MASK | inotify.IN_DONT_FOLLOW)] = path
            except OSError as exc:
                log.debug("cannot watch the canary %s: %s", path, exc)
        try:
            self._stats[path] = os.lstat(path)
        except OSError:
            self._stats.pop(path, None)

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._stop_r, select.POLLIN)
        if self.inotify is not None:
            poller.register(self.inotify.fileno(), select.POLLIN)
        while True:
            timeout = None if self.inotify is not None else self.poll_interval * 1000
            if any(fd == self._stop_r for fd, _ in poller.poll(timeout)):
                return
            try:
                if self.inotify is not None:
                    self._on_events()
                else:
                    self._poll()
            except Exception:  # a canary must not stop the sensor
                log.exception("watching the canaries failed")

    # --- inotify -------------------------------------------------------------------------

    def _on_events(self) -> None:
        assert self.inotify is not None
        masks: dict[str, int] = {}
        processes: dict[str, list[tuple[int, str]]] = {}
        deadline = time.monotonic() + COALESCE
        while True:
            for event in self.inotify.read():
                path = self._wds.get(event.wd)
                if path is None or event.mask & inotify.IN_IGNORED:
                    continue
                if path not in masks:
                    processes[path] = holders(path)  # at once: the reader may be gone soon
                masks[path] = masks.get(path, 0) | event.mask
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.inotify.fileno()], [], [], left)[0]:
                break
        for path, mask in masks.items():
            hows = [how for bit, how in _HOWS if mask & bit]
            self._report(path, hows, processes.get(path, []))
            if mask & (inotify.IN_DELETE_SELF | inotify.IN_MOVE_SELF):
                self._replant(path)

    def _replant(self, path: str) -> None:
        for wd in [wd for wd, p in self._wds.items() if p == path]:
            del self._wds[wd]
        if path in self.planted:
            try:
                plant(path)
            except OSError:
                return
        if os.path.lexists(path):
            self._watch(path)

    # --- polling -------------------------------------------------------------------------

    def _poll(self) -> None:
        for path in self.paths:
            old = self._stats.get(path)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                if old is not None:
                    self._report(path, ["deleted"], [])
                    self._replant(path)
                continue
            except OSError:
                continue
            if old is None:
                self._stats[path] = st
                continue
            hows = []
            if (st.st_ino, st.st_dev) != (old.st_ino, old.st_dev):
                hows.append("moved")
            elif (st.st_size, st.st_mtime_ns, st.st_mode, st.st_uid) != (
                old.st_size,
                old.st_mtime_ns,
                old.st_mode,
                old.st_uid,
            ):
                hows.append("modified")
            elif st.st_atime_ns > old.st_atime_ns:
                hows.append("read")
            if hows:
                self._report(path, hows, holders(path))
                try:
                    rearm(path)
                    st = os.lstat(path)
                except OSError:
                    pass
            self._stats[path] = st

    # --- events --------------------------------------------------------------------------

    def _report(self, path: str, hows: list[str], processes: list[tuple[int, str]]) -> None:
        verdict, suppressed = self.limiter.check(path)
        if verdict is Verdict.DROP:
            return
        how = hows[0] if hows else "opened"
        data: dict[str, Any] = {"how": how, "hows": hows}
        pid = None
        if processes:
            pid, name = processes[0]
            data.update(pid=pid, process=name)
        if suppressed:
            data["suppressed_before"] = suppressed
        message = f"canary file {path} {how}"
        if processes:
            message += f" by {processes[0][1]} (pid {pid})"
        if verdict is Verdict.LAST:
            data["rate_limited"] = True
            message += "; more accesses are suppressed for a minute"
        self.emit(
            make_event("canary_accessed", message=message, source="canary", path=path, pid=pid, data=data)
        )
