"""Log integrity: logs and shell histories that shrink, vanish, are replaced or silenced.

Watched: the system logs (auth.log, syslog, messages, secure, wtmp, btmp, lastlog, kern.log),
the ``--log`` files, the journal directory's total size and each home's shell histories. A
baseline in the state directory makes changes made while the sensor was down show up after a
restart, once. Logrotate's work is told apart from tampering: a file whose old inode now lives
at ``path.1`` or ``path-YYYYMMDD`` was rotated (``log_rotated``), and so was a log truncated
right after its content was copied there (``copytruncate``).

Shell histories are rewritten by the shell itself (bash writes a new file and renames it, and
trims it to HISTFILESIZE), so for them only deletion, a link to /dev/null and a real shrink (to
less than half, or to nothing) are reported.
"""

from __future__ import annotations

import os
import stat
import struct
import time
from typing import Any

from ..events import make_event
from .base import BaselineCollector, CollectorContext
from .files import HomeDirs, find_rotated, rotation_candidates

STATE_FILE = "logintegrity.json"
SYSTEM_LOGS = (
    "/var/log/auth.log",
    "/var/log/syslog",
    "/var/log/messages",
    "/var/log/secure",
    "/var/log/wtmp",
    "/var/log/btmp",
    "/var/log/lastlog",
    "/var/log/kern.log",
)
HISTORIES = (".bash_history", ".zsh_history", ".ash_history", ".python_history")
JOURNAL_MAX_FILES = 10000
JOURNAL_SHRINK_FLOOR = 1024 * 1024
#: a journal that held at least this many entries and lost half of them was cleared
#: (``journalctl --vacuum-*``); journald's own size limits remove far less at a time
JOURNAL_ENTRIES_FLOOR = 200
#: where a journal file's header keeps its entry count (systemd's journal file format)
JOURNAL_MAGIC = b"LPKSHHRH"
JOURNAL_N_ENTRIES = struct.Struct("<Q")
JOURNAL_N_ENTRIES_OFFSET = 152

Entry = dict[str, Any]


class LogIntegrityCollector(BaselineCollector):
    """log_truncated / _deleted / _replaced / _rotated / _linked_devnull events."""

    name = "logintegrity"
    produces = "events"
    interval_group = "fast"
    state_file = STATE_FILE

    def __init__(self, context: CollectorContext) -> None:
        super().__init__(context)
        self.homes = HomeDirs(context.passwd_path)
        self._devnull: int | None
        try:
            self._devnull = os.stat("/dev/null").st_rdev
        except OSError:
            self._devnull = None

    def watched(self) -> list[tuple[str, str]]:
        """(path, "log" | "history" | "journal") for everything watched."""
        logs = self.context.integrity_logs
        logs = list(SYSTEM_LOGS if logs is None else logs) + list(self.context.extra_logs)
        found = [(path, "log") for path in logs]
        for home in self.homes.homes():
            found.extend((os.path.join(home, name), "history") for name in HISTORIES)
        if self.context.journal_dir:
            found.append((self.context.journal_dir, "journal"))
        return list(dict.fromkeys(found))

    def watch_paths(self) -> list[str]:
        """The logs and histories (the journal directory, always busy, is only polled)."""
        return [path for path, kind in self.watched() if kind != "journal"]

    def collect(self) -> list[dict[str, Any]]:
        """Events for what happened to the watched files since the baseline."""
        previous = self._baseline or {}
        first_run = self._baseline is None
        current: dict[str, Entry] = {}
        events: list[dict[str, Any]] = []
        now = time.time()
        for path, kind in self.watched():
            entry = self._observe(path, kind)
            if entry is None:  # unreadable: keep what we knew
                if path in previous:
                    current[path] = previous[path]
                continue
            old = previous.get(path)
            if old is not None and self._same(old, entry):
                current[path] = old
                continue
            entry["seen"] = now
            current[path] = entry
            if entry["state"] == "devnull" and (old is None or old["state"] != "devnull"):
                events.append(self._event("log_linked_devnull", path, kind, old, entry))
            elif old is not None and not first_run:
                events.extend(self._compare(path, kind, old, entry))
        if current != previous:
            self._pending = current
        return events

    # --- observing -----------------------------------------------------------------------

    def _observe(self, path: str, kind: str) -> Entry | None:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return {"state": "missing"}
        except OSError as exc:
            self.report(os.path.dirname(path), f"cannot look inside: {exc.strerror}")
            return None
        if stat.S_ISLNK(st.st_mode):
            try:
                target = os.readlink(path)
            except OSError:
                return {"state": "missing"}  # removed while we looked
            if os.path.realpath(path) == "/dev/null":
                return {"state": "devnull", "how": "symlink", "target": target}
            return {"state": "link", "target": target}
        if stat.S_ISCHR(st.st_mode) and st.st_rdev == self._devnull:
            return {"state": "devnull", "how": "device node"}
        if stat.S_ISDIR(st.st_mode) and kind == "journal":
            size, files, entries = self._tree_size(path)
            return {"state": "dir", "size": size, "files": files, "entries": entries}
        if stat.S_ISREG(st.st_mode):
            return {"state": "file", "dev": st.st_dev, "inode": st.st_ino, "size": st.st_size}
        return {"state": "other", "mode": stat.S_IFMT(st.st_mode)}

    @staticmethod
    def _tree_size(path: str) -> tuple[int, int, int]:
        """Total bytes, files and journal entries under ``path``. Journal files preallocate
        their space, so only the entry counts in their headers show what a vacuum removed."""
        total = files = entries = 0
        stack = [path]
        while stack and files < JOURNAL_MAX_FILES:
            try:
                items = list(os.scandir(stack.pop()))
            except OSError:
                continue
            for item in items:
                try:
                    if item.is_dir(follow_symlinks=False):
                        stack.append(item.path)
                    elif item.is_file(follow_symlinks=False):
                        total += item.stat(follow_symlinks=False).st_size
                        files += 1
                        if item.name.endswith(".journal"):
                            entries += _journal_entries(item.path)
                except OSError:
                    continue
        return total, files, entries

    @staticmethod
    def _same(old: Entry, new: Entry) -> bool:
        return all(old.get(k) == v for k, v in new.items())

    # --- judging -------------------------------------------------------------------------

    def _compare(self, path: str, kind: str, old: Entry, new: Entry) -> list[dict[str, Any]]:
        was, now = old["state"], new["state"]
        if was == "missing" or (was == now == "link" and old.get("target") == new.get("target")):
            return []
        if now == "missing":
            if kind == "log" and was == "file":
                rotated = find_rotated(path, old["dev"], old["inode"])
                if rotated:
                    return [self._event("log_rotated", path, kind, old, new, rotated_to=rotated)]
            return [self._event("log_deleted", path, kind, old, new)]
        if kind == "journal":
            if now == "dir" and was == "dir":
                shrunk = (old["size"] > JOURNAL_SHRINK_FLOOR and new["size"] < old["size"] / 2) or (
                    old.get("entries", 0) >= JOURNAL_ENTRIES_FLOOR
                    and new.get("entries", 0) < old["entries"] / 2)
                if shrunk:
                    return [self._event("log_truncated", path, kind, old, new)]
                return []
            return [self._event("log_replaced", path, kind, old, new)]
        if was != "file":
            return []  # a link or odd file became something else: nothing to compare
        if now != "file":
            return [self._event("log_replaced", path, kind, old, new)]
        same_file = (old["dev"], old["inode"]) == (new["dev"], new["inode"])
        if kind == "history":
            if new["size"] < old["size"] and (new["size"] == 0 or new["size"] < old["size"] / 2):
                return [self._event("log_truncated", path, kind, old, new)]
            return []
        if not same_file:
            rotated = find_rotated(path, old["dev"], old["inode"])
            if rotated:
                return [self._event("log_rotated", path, kind, old, new, rotated_to=rotated)]
            return [self._event("log_replaced", path, kind, old, new)]
        if new["size"] < old["size"]:
            copied = self._copytruncated(path, old)
            if copied:
                return [
                    self._event(
                        "log_rotated",
                        path,
                        kind,
                        old,
                        new,
                        rotated_to=copied,
                        method="copytruncate",
                    )
                ]
            return [self._event("log_truncated", path, kind, old, new)]
        return []

    @staticmethod
    def _copytruncated(path: str, old: Entry) -> str | None:
        """The rotated copy of ``path`` made since we last saw it, if its content is all there."""
        for candidate in rotation_candidates(path):
            try:
                st = os.stat(candidate)
            except OSError:
                continue
            fresh = st.st_ctime >= old.get("seen", 0) - 2
            if stat.S_ISREG(st.st_mode) and fresh and st.st_size >= old["size"]:
                return candidate
        return None

    @staticmethod
    def _event(kind: str, path: str, what: str, old: Entry | None, new: Entry, **extra: Any):
        data: dict[str, Any] = {"watched": what, **extra}
        if old is not None and "size" in old:
            data["old_size"] = old["size"]
        if "size" in new:
            data["new_size"] = new["size"]
        if old is not None and old.get("inode") and new.get("inode") != old.get("inode"):
            data["old_inode"] = old["inode"]
            if new.get("inode"):
                data["new_inode"] = new["inode"]
        if new.get("target"):
            data["link_target"] = new["target"]
        if new.get("how"):
            data["how"] = new["how"]
        if "files" in new:
            data["files"] = new["files"]
        if "entries" in new:
            data["entries"] = new["entries"]
            if old is not None and "entries" in old:
                data["old_entries"] = old["entries"]
        messages = {
            "log_truncated": "shrank",
            "log_deleted": "was deleted",
            "log_replaced": "was replaced by another file",
            "log_rotated": "was rotated",
            "log_linked_devnull": "now points to /dev/null",
        }
        return make_event(
            kind,
            message=f"{what} {path} {messages[kind]}",
            source="logintegrity",
            path=path,
            data=data,
        )


def _journal_entries(path: str) -> int:
    """The entry count in a journal file's header (0 for anything else)."""
    with open(path, "rb") as f:
        head = f.read(JOURNAL_N_ENTRIES_OFFSET + JOURNAL_N_ENTRIES.size)
    if len(head) < JOURNAL_N_ENTRIES_OFFSET + JOURNAL_N_ENTRIES.size or not head.startswith(JOURNAL_MAGIC):
        return 0
    return int(JOURNAL_N_ENTRIES.unpack_from(head, JOURNAL_N_ENTRIES_OFFSET)[0])
