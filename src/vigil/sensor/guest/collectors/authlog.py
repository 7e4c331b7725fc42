"""Follows the authentication logs and turns their lines into security events.

Files: ``/var/log/auth.log`` and ``/var/log/secure`` (those that exist) plus every ``--log``
file. The read offset of each file is kept per inode in the state directory and saved only after
the events were spooled (:meth:`AuthLogCollector.commit`), so a restart neither re-sends nor
misses lines; the event ids derive from the file, the offset and the line, so even a line read
twice is deduplicated by the server. A rotation (new inode) first finishes the old file where
logrotate moved it; a truncation (size below the offset) starts again from 0. A file seen for
the first time is read from its last :data:`INITIAL_BACKLOG` bytes.

When neither system file exists (journald-only systems), ``journalctl -f -o json`` is followed
instead, restricted to the authentication programs and resumed from a saved cursor.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import shutil
import subprocess
import threading
import time
from typing import Any

from .authparse import JOURNAL_IDENTIFIERS, AuthLogParser
from .base import Collector, CollectorContext
from .files import find_rotated

log = logging.getLogger(__name__)

STATE_FILE = "authlog.json"
INITIAL_BACKLOG = 1024 * 1024
MAX_READ_PER_COLLECT = 8 * 1024 * 1024
JOURNAL_BACKLOG_LINES = 1000


class AuthLogCollector(Collector):
    """Security events from auth/security logs (files, or the journal as a fallback)."""

    name = "authlog"
    produces = "events"
    interval_group = "fast"

    def __init__(self, context: CollectorContext) -> None:
        super().__init__(context)
        self.parser = AuthLogParser()
        saved = context.state.read_json(STATE_FILE, {})
        saved = saved if isinstance(saved, dict) else {}
        self._offsets: dict[str, dict[str, int]] = saved.get("files", {})
        self._cursor: str | None = saved.get("journal_cursor")
        self._pending_offsets: dict[str, dict[str, int]] = {}
        self._pending_cursor: str | None = None
        self.files = list(dict.fromkeys([*context.auth_logs, *context.extra_logs]))
        system_files = [p for p in context.auth_logs if os.path.exists(p)]
        self.use_journal = context.use_journal and not system_files and shutil.which("journalctl") is not None
        self._journal: subprocess.Popen[bytes] | None = None
        self._journal_lines: queue.Queue[bytes | None] = queue.Queue(maxsize=20000)
        self._journal_restart_at = 0.0

    # --- collecting ----------------------------------------------------------------------

    def collect(self) -> list[dict[str, Any]]:
        """New events since the last committed position."""
        events: list[dict[str, Any]] = []
        self._pending_offsets = {}
        for path in self.files:
            events.extend(self._follow(path))
        if self.use_journal:
            events.extend(self._read_journal())
        return events

    def watch_paths(self) -> list[str]:
        """The followed log files (a write wakes this collector at once)."""
        return list(self.files)

    def commit(self) -> None:
        """Save the positions reached by the last :meth:`collect`."""
        if not self._pending_offsets and self._pending_cursor is None:
            return
        self._offsets.update(self._pending_offsets)
        if self._pending_cursor is not None:
            self._cursor = self._pending_cursor
        self._pending_offsets, self._pending_cursor = {}, None
        self.context.state.write_json(STATE_FILE, {"files": self._offsets, "journal_cursor": self._cursor})

    def close(self) -> None:
        """Stop the journalctl subprocess, if any."""
        if self._journal is not None:
            self._journal.terminate()
            try:
                self._journal.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._journal.kill()
            self._journal = None

    # --- files ---------------------------------------------------------------------------

    def _follow(self, path: str) -> list[dict[str, Any]]:
        saved = self._offsets.get(path)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return []
        except OSError as exc:
            self.report(path, f"cannot stat: {exc.strerror}")
            return []
        unchanged = saved and (saved["dev"], saved["inode"], saved["offset"]) == (
            st.st_dev,
            st.st_ino,
            st.st_size,
        )
        if unchanged:
            return []  # the common case: nothing new, no open()
        events: list[dict[str, Any]] = []
        try:
            handle = open(path, "rb")  # noqa: SIM115 - closed below, after fstat
        except OSError as exc:
            self.report(path, f"cannot read: {exc.strerror}")
            return []
        with handle:
            st = os.fstat(handle.fileno())
            if saved is None:
                start = self._initial_offset(handle, st.st_size)
            elif saved["inode"] != st.st_ino or saved["dev"] != st.st_dev:
                rotated = find_rotated(path, saved["dev"], saved["inode"])
                if rotated is not None:
                    events.extend(self._read_rotated(rotated, saved))
                start = 0
            elif st.st_size < saved["offset"]:
                start = 0  # truncated
            else:
                start = saved["offset"]
            new_events, offset = self._read_from(handle, path, st, start)
            events.extend(new_events)
        self._pending_offsets[path] = {"dev": st.st_dev, "inode": st.st_ino, "offset": offset}
        return events

    @staticmethod
    def _initial_offset(handle: Any, size: int) -> int:
        if size <= INITIAL_BACKLOG:
            return 0
        handle.seek(size - INITIAL_BACKLOG)
        handle.readline()  # skip to the next whole line
        return int(handle.tell())

    def _read_rotated(self, path: str, saved: dict[str, int]) -> list[dict[str, Any]]:
        """The lines appended to a log after our offset and before it was rotated away."""
        try:
            with open(path, "rb") as handle:
                st = os.fstat(handle.fileno())
                if st.st_size <= saved["offset"]:
                    return []
                events, _ = self._read_from(handle, path, st, saved["offset"])
                return events
        except OSError:
            return []

    def _read_from(
        self, handle: Any, path: str, st: os.stat_result, start: int
    ) -> tuple[list[dict[str, Any]], int]:
        """Events of the whole lines from ``start``; returns them and the offset reached."""
        handle.seek(start)
        chunk = handle.read(MAX_READ_PER_COLLECT)
        end = chunk.rfind(b"\n") + 1  # an unfinished last line waits for the next collect
        if end == 0 and len(chunk) == MAX_READ_PER_COLLECT:
            return [], start + len(chunk)  # no line is that long: skip the garbage
        events = []
        offset = start
        for raw in chunk[:end].split(b"\n")[:-1]:
            line = raw.decode("utf-8", "replace").rstrip("\r")
            seed = f"{path}:{st.st_dev}:{st.st_ino}:{offset}"
            offset += len(raw) + 1
            if line:
                events.extend(self.parser.parse_line(line, source=path, seed=seed))
        return events, start + end

    # --- journal -------------------------------------------------------------------------

    def _journal_command(self) -> list[str]:
        command = ["journalctl", "-f", "-o", "json", "--no-pager", "--no-tail"]
        if self._cursor:
            command.append(f"--after-cursor={self._cursor}")
        else:
            command = [
                "journalctl",
                "-f",
                "-o",
                "json",
                "--no-pager",
                "-n",
                str(JOURNAL_BACKLOG_LINES),
            ]
        for identifier in JOURNAL_IDENTIFIERS:
            command += ["-t", identifier]
        return command

    def _start_journal(self) -> None:
        if time.monotonic() < self._journal_restart_at:
            return
        self._journal_restart_at = time.monotonic() + 30
        try:
            self._journal = subprocess.Popen(
                self._journal_command(),
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                stdin=subprocess.DEVNULL,
            )
        except OSError as exc:
            self.report("the systemd journal", f"cannot run journalctl: {exc}")
            return
        process = self._journal
        threading.Thread(target=self._pump, args=(process,), name="vigil-journalctl", daemon=True).start()
        log.info("following the systemd journal (no auth log file found)")

    def _pump(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self._journal_lines.put(line)
        self._journal_lines.put(None)

    def _read_journal(self) -> list[dict[str, Any]]:
        if self._journal is None or self._journal.poll() is not None:
            if self._journal is not None:
                self.report("the systemd journal", "journalctl exited; restarting it")
                self._journal = None
            self._start_journal()
        events: list[dict[str, Any]] = []
        while True:
            try:
                raw = self._journal_lines.get_nowait()
            except queue.Empty:
                break
            if raw is None:
                continue
            try:
                entry = json.loads(raw)
            except ValueError:
                continue
            if isinstance(entry, dict):
                events.extend(self.parser.parse_journal_entry(entry))
                if entry.get("__CURSOR"):
                    self._pending_cursor = str(entry["__CURSOR"])
        return events
