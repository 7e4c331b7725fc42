"""Persistence paths: cron, systemd units, shell start-up files, authorized_keys, ld.so.preload.

A baseline (path -> sha256, size, mode, uid, mtime, inode, and the text of small text files) is
kept in the state directory: the first run records it silently; afterwards every created,
modified or deleted file is an event — also for changes made while the sensor was down — and
nothing is reported twice. Each scan only ``lstat``s; a file is hashed again only when its
size, mtime, inode, mode or owner changed. Symbolic links (``systemctl enable``) are recorded
with their target, never followed.
"""

from __future__ import annotations

import difflib
import os
import stat
from typing import Any

from ..events import make_event
from ..util import sha256_file
from .base import BaselineCollector, CollectorContext
from .files import HomeDirs

STATE_FILE = "persistence.json"
SYSTEM_PATHS = (
    "/etc/crontab",
    "/etc/anacrontab",
    "/etc/cron.d",
    "/etc/cron.hourly",
    "/etc/cron.daily",
    "/etc/cron.weekly",
    "/etc/cron.monthly",
    "/var/spool/cron",
    "/etc/systemd/system",
    "/run/systemd/system",
    "/usr/local/lib/systemd/system",
    "/etc/rc.local",
    "/etc/ld.so.preload",
    "/etc/profile",
    "/etc/profile.d",
    "/etc/bash.bashrc",
)
HOME_PATHS = (
    ".ssh/authorized_keys",
    ".ssh/authorized_keys2",
    ".bashrc",
    ".profile",
    ".bash_profile",
    ".bash_login",
    ".config/systemd/user",
)
MAX_FILES = 5000
MAX_DEPTH = 8
MAX_HASH_BYTES = 64 * 1024 * 1024
TEXT_LIMIT = 64 * 1024
MAX_LINES = 50
MAX_LINE_CHARS = 1000
MAX_DIFF_CHARS = 4000


def _read_text(path: str, size: int) -> str | None:
    """The content of a small text file, or None (binary, large or unreadable)."""
    if size >= TEXT_LIMIT:
        return None
    try:
        with open(path, "rb") as handle:
            raw = handle.read(TEXT_LIMIT)
    except OSError:
        return None
    if b"\0" in raw:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _lines(items: list[str]) -> list[str]:
    return [line[:MAX_LINE_CHARS] for line in items[:MAX_LINES]]


class PersistenceCollector(BaselineCollector):
    """persistence_created / _modified / _deleted events for the watched paths."""

    name = "persistence"
    produces = "events"
    interval_group = "fast"
    state_file = STATE_FILE

    def __init__(self, context: CollectorContext) -> None:
        super().__init__(context)
        self.homes = HomeDirs(context.passwd_path)

    def watched_paths(self) -> list[str]:
        """The roots to scan: the system paths and each home's start-up files."""
        configured = self.context.persistence_paths
        roots = list(SYSTEM_PATHS if configured is None else configured)
        for home in self.homes.homes():
            roots.extend(os.path.join(home, rel) for rel in HOME_PATHS)
        return list(dict.fromkeys(roots))

    def watch_paths(self) -> list[str]:
        """The persistence paths (a change under them wakes this collector at once)."""
        return self.watched_paths()

    def collect(self) -> list[dict[str, Any]]:
        """Events for what changed since the baseline (none on the very first run)."""
        previous = self._baseline or {}
        current, failed_dirs = self._scan(previous)
        events: list[dict[str, Any]] = []
        if self._baseline is not None:
            for path, entry in current.items():
                old = previous.get(path)
                if old is None:
                    events.append(self._created(path, entry))
                elif self._differs(old, entry):
                    events.append(self._modified(path, old, entry))
            for path, old in previous.items():
                if path in current:
                    continue
                if any(path == d or path.startswith(d + "/") for d in failed_dirs):
                    current[path] = old  # unreadable now: not a deletion
                    continue
                events.append(self._deleted(path, old))
        if self._baseline is None or events or current != previous:
            self._pending = current
        return events

    # --- scanning ------------------------------------------------------------------------

    def _scan(self, previous: dict[str, dict[str, Any]]) -> tuple[dict[str, dict[str, Any]], list[str]]:
        found: dict[str, dict[str, Any]] = {}
        failed: list[str] = []
        stack: list[tuple[str, int]] = [(root, 0) for root in reversed(self.watched_paths())]
        while stack:
            path, depth = stack.pop()
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            except OSError as exc:
                self.report(os.path.dirname(path), f"cannot look inside: {exc.strerror}")
                failed.append(path)
                continue
            if stat.S_ISDIR(st.st_mode):
                if depth >= MAX_DEPTH:
                    continue
                try:
                    names = sorted(os.listdir(path))
                except OSError as exc:
                    self.report(path, f"cannot list: {exc.strerror}")
                    failed.append(path)
                    continue
                stack.extend((os.path.join(path, n), depth + 1) for n in reversed(names))
                continue
            if len(found) >= MAX_FILES:
                self.report("persistence paths", f"over {MAX_FILES} files; the rest is skipped")
                break
            found[path] = self._entry(path, st, previous.get(path))
        return found, failed

    def _entry(self, path: str, st: os.stat_result, old: dict[str, Any] | None) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "size": st.st_size,
            "mode": stat.S_IMODE(st.st_mode),
            "uid": st.st_uid,
            "mtime_ns": st.st_mtime_ns,
            "inode": st.st_ino,
            "type": "link" if stat.S_ISLNK(st.st_mode) else "file",
        }
        if stat.S_ISLNK(st.st_mode):
            try:
                entry["target"] = os.readlink(path)
            except OSError:
                entry["target"] = None
            return entry
        if old is not None and all(old.get(k) == entry[k] for k in entry):
            entry["sha256"] = old.get("sha256")
            if "text" in old:
                entry["text"] = old["text"]
            return entry
        if not stat.S_ISREG(st.st_mode):
            entry["type"] = "other"
            return entry
        try:
            entry["sha256"] = sha256_file(path, MAX_HASH_BYTES)
        except OSError as exc:
            entry["sha256"] = None
            self.report(path, f"cannot read: {exc.strerror}")
            return entry
        text = _read_text(path, st.st_size)
        if text is not None:
            entry["text"] = text
        return entry

    @staticmethod
    def _differs(old: dict[str, Any], new: dict[str, Any]) -> bool:
        return any(old.get(k) != new.get(k) for k in ("sha256", "mode", "uid", "type", "target"))

    # --- events --------------------------------------------------------------------------

    @staticmethod
    def _facts(entry: dict[str, Any]) -> dict[str, Any]:
        facts = {
            "sha256": entry.get("sha256"),
            "size": entry.get("size"),
            "mode": f"{entry.get('mode', 0):04o}",
            "uid": entry.get("uid"),
            "type": entry.get("type"),
        }
        if entry.get("type") == "link":
            facts["link_target"] = entry.get("target")
        return {k: v for k, v in facts.items() if v is not None}

    def _created(self, path: str, entry: dict[str, Any]) -> dict[str, Any]:
        data = self._facts(entry)
        if entry.get("text") is not None:
            data["added_lines"] = _lines(entry["text"].splitlines())
        what = f"-> {entry.get('target')}" if entry.get("type") == "link" else ""
        return make_event(
            "persistence_created",
            message=f"new file under a persistence path: {path} {what}".strip(),
            source="persistence",
            path=path,
            data=data,
        )

    def _modified(self, path: str, old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
        data = self._facts(new)
        data["old_sha256"] = old.get("sha256")
        fields = ("sha256", "mode", "uid", "type", "target")
        changes = [k for k in fields if old.get(k) != new.get(k)]
        data["changes"] = ["content" if c == "sha256" else c for c in changes]
        if old.get("mode") != new.get("mode"):
            data["old_mode"] = f"{old.get('mode', 0):04o}"
        if old.get("uid") != new.get("uid"):
            data["old_uid"] = old.get("uid")
        old_text, new_text = old.get("text"), new.get("text")
        if new_text is not None and "sha256" in changes:
            before = (old_text or "").splitlines()
            diff = list(difflib.unified_diff(before, new_text.splitlines(), lineterm="", n=0))
            data["added_lines"] = _lines(
                [d[1:] for d in diff if d.startswith("+") and not d.startswith("+++")]
            )
            data["removed_lines"] = _lines(
                [d[1:] for d in diff if d.startswith("-") and not d.startswith("---")]
            )
            if old_text is not None:
                data["diff"] = "\n".join(diff[2:])[:MAX_DIFF_CHARS]
        return make_event(
            "persistence_modified",
            message=f"persistence file changed ({', '.join(data['changes'])}): {path}",
            source="persistence",
            path=path,
            data={k: v for k, v in data.items() if v is not None},
        )

    def _deleted(self, path: str, old: dict[str, Any]) -> dict[str, Any]:
        return make_event(
            "persistence_deleted",
            message=f"persistence file deleted: {path}",
            source="persistence",
            path=path,
            data=self._facts(old),
        )
