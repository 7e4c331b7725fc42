"""Processes: who runs what, from which (hashed) executable, with which stdio.

Only stable fields are collected (no CPU or memory figures), so a process shows up as changed in
a differential snapshot only when something meaningful about it changed. Executables are hashed
once per (device, inode, mtime, size), reading ``/proc/PID/exe`` so that even a deleted or
memfd executable is hashed.
"""

from __future__ import annotations

import os
import pwd
from typing import Any

import psutil

from ..util import SHORT_MAX, TEXT_MAX, clip, iso_from_epoch, permission_hint, sha256_file
from .base import Collector, CollectorContext

ATTRS = ["pid", "ppid", "name", "cmdline", "uids", "gids", "create_time", "cwd"]
MAX_HASH_BYTES = 512 * 1024 * 1024
MAX_HASH_CACHE = 4096
_DELETED = " (deleted)"


def process_key(pid: int, create_time: float | None) -> str:
    """The stable key of a process: its pid and start time, so a reused pid is a new key."""
    return f"{pid}:{int((create_time or 0) * 100)}"


class ProcessesCollector(Collector):
    """Every process, with its executable's sha256 and which of fds 0-2 are sockets."""

    name = "processes"
    produces = "snapshot"
    interval_group = "process"

    def __init__(self, context: CollectorContext) -> None:
        super().__init__(context)
        self._hashes: dict[tuple[int, int, int, int], str | None] = {}
        self._terminals: dict[str, str | None] = {}
        self._denied = False

    def collect(self) -> list[dict[str, Any]]:
        """One item per process (see ``vigil.protocol.models.ProcessItem``)."""
        items = []
        names: dict[int, str] = {}
        self._denied = False
        terminals: dict[str, str | None] = {}
        for proc in psutil.process_iter(ATTRS, ad_value=None):
            item = self._item(proc, names, terminals)
            if item is not None:
                items.append(item)
        self._terminals = terminals
        if len(self._hashes) > MAX_HASH_CACHE:
            self._hashes.clear()
        if self._denied:
            self.report("exe, cwd or fds of some processes", permission_hint())
        return items

    def _item(
        self, proc: psutil.Process, names: dict[int, str], terminals: dict[str, str | None]
    ) -> dict[str, Any] | None:
        info = proc.info
        pid = info["pid"]
        if info.get("create_time") is None and not os.path.exists(f"{self.context.proc}/{pid}"):
            return None  # exited while we looked
        key = process_key(pid, info.get("create_time"))
        kernel_thread = pid == 2 or info.get("ppid") == 2
        exe = sha256 = None
        deleted = False
        sockets: list[int] = []
        if not kernel_thread:
            exe, deleted = self._exe(pid)
            if exe is not None:
                sha256, unlinked = self._sha256(pid)
                deleted = deleted or unlinked
            sockets = self._stdio_sockets(pid)
        if key in self._terminals:
            terminals[key] = self._terminals[key]
        else:
            terminals[key] = self._terminal(proc)
        uids = info.get("uids")
        gids = info.get("gids")
        uid = uids.real if uids else None
        create_time = info.get("create_time")
        return {
            "key": key,
            "pid": pid,
            "ppid": info.get("ppid"),
            "name": clip(info.get("name") or "?", SHORT_MAX),
            "exe": clip(exe, TEXT_MAX),
            "cmdline": [clip(arg, TEXT_MAX) for arg in (info.get("cmdline") or [])[:256]],
            "uid": uid,
            "euid": uids.effective if uids else None,
            "gid": gids.real if gids else None,
            "username": self._username(uid, names),
            "start_time": iso_from_epoch(create_time) if create_time else None,
            "sha256": sha256,
            "exe_deleted": deleted,
            "stdio_sockets": sockets,
            "cwd": clip(info.get("cwd"), TEXT_MAX),
            "terminal": clip(terminals[key], SHORT_MAX),
        }

    def _exe(self, pid: int) -> tuple[str | None, bool]:
        """The executable's path, and whether the kernel marks it deleted."""
        try:
            raw = os.readlink(f"{self.context.proc}/{pid}/exe")
        except PermissionError:
            self._denied = True
            return None, False
        except OSError:
            return None, False
        if raw.endswith(_DELETED):
            return raw[: -len(_DELETED)], True
        return raw, False

    def _sha256(self, pid: int) -> tuple[str | None, bool]:
        """The sha256 of the running executable, and whether it is gone (no link left)."""
        path = f"{self.context.proc}/{pid}/exe"
        try:
            st = os.stat(path)
        except OSError:
            return None, False
        cache_key = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
        if cache_key not in self._hashes:
            try:
                self._hashes[cache_key] = sha256_file(path, MAX_HASH_BYTES)
            except OSError:
                return None, st.st_nlink == 0
        return self._hashes[cache_key], st.st_nlink == 0

    def _stdio_sockets(self, pid: int) -> list[int]:
        sockets = []
        for fd in (0, 1, 2):
            try:
                if os.readlink(f"{self.context.proc}/{pid}/fd/{fd}").startswith("socket:"):
                    sockets.append(fd)
            except PermissionError:
                self._denied = True
                break
            except OSError:
                continue
        return sockets

    @staticmethod
    def _terminal(proc: psutil.Process) -> str | None:
        try:
            return proc.terminal()
        except (psutil.Error, OSError):
            return None

    @staticmethod
    def _username(uid: int | None, names: dict[int, str]) -> str | None:
        if uid is None:
            return None
        if uid not in names:
            try:
                names[uid] = pwd.getpwuid(uid).pw_name
            except KeyError:
                names[uid] = str(uid)
        return clip(names[uid], SHORT_MAX)
