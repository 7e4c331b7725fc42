"""Processes: who runs what, from which (hashed) executable, with which stdio.

Only stable fields are collected (no CPU or memory figures), so a process shows up as changed in
a differential snapshot only when something meaningful about it changed. Executables are hashed
once per (device, inode, mtime, size), reading ``/proc/PID/exe`` so that even a deleted or
memfd executable is hashed.

Each item also names the parent as this scan saw it (which may exit before the server looks),
the remote end of a TCP/UDP socket on stdin/stdout/stderr (a reverse shell's), and those
environment variables of :data:`vigil.protocol.SECURITY_ENV_VARS` that are set — no other
variable is read out. The environment is parsed once per process image: it cannot change
after ``exec`` (a new exec keeps the pid, but changes the executable or the command line).
"""

from __future__ import annotations

import os
import pwd
from typing import Any

import psutil

from vigil.protocol import SECURITY_ENV_VARS

from ..util import SHORT_MAX, TEXT_MAX, clip, iso_from_epoch, permission_hint, sha256_file
from .base import Collector, CollectorContext
from .socket_table import shared_socket_table

ATTRS = ["pid", "ppid", "name", "cmdline", "uids", "gids", "create_time", "cwd"]
MAX_HASH_BYTES = 512 * 1024 * 1024
MAX_HASH_CACHE = 4096
MAX_ENV_BYTES = 1024 * 1024
ENV_VALUE_CHARS = 1024
_DELETED = " (deleted)"
_ENV_PREFIXES = tuple(f"{name}=".encode() for name in SECURITY_ENV_VARS)
_ENV_HINTS = tuple({name[:3].encode() for name in SECURITY_ENV_VARS})


def security_env(raw: bytes) -> dict[str, str]:
    """The variables of SECURITY_ENV_VARS set in a NUL-separated environ, values clipped."""
    if not any(hint in raw for hint in _ENV_HINTS):
        return {}  # the common case: one or two substring searches, no split
    found: dict[str, str] = {}
    for entry in raw.split(b"\0"):
        if entry.startswith(_ENV_PREFIXES):
            name, _, value = entry.partition(b"=")
            found[name.decode()] = value.decode("utf-8", "replace")[:ENV_VALUE_CHARS]
    return found


def process_key(pid: int, create_time: float | None) -> str:
    """The stable key of a process: its pid and start time, so a reused pid is a new key."""
    return f"{pid}:{int((create_time or 0) * 100)}"


class ProcessesCollector(Collector):
    """Every process, with its executable's sha256 and which of fds 0-2 are sockets."""

    name = "processes"
    produces = "snapshot"
    interval_group = "process"
    wake_on_process_events = True

    def __init__(self, context: CollectorContext) -> None:
        super().__init__(context)
        self._hashes: dict[tuple[int, int, int, int], str | None] = {}
        self._terminals: dict[str, str | None] = {}
        self._envs: dict[tuple[str, str | None, tuple[str, ...]], dict[str, str]] = {}
        self._denied = False
        self.table = shared_socket_table(context.shared, context.proc)

    def collect(self) -> list[dict[str, Any]]:
        """One item per process (see ``vigil.protocol.models.ProcessItem``)."""
        items = []
        names: dict[int, str] = {}
        self._denied = False
        terminals: dict[str, str | None] = {}
        envs: dict[tuple[str, str | None, tuple[str, ...]], dict[str, str]] = {}
        for proc in psutil.process_iter(ATTRS, ad_value=None):
            item = self._item(proc, names, terminals, envs)
            if item is not None:
                items.append(item)
        self._terminals = terminals
        self._envs = envs
        self._add_parents(items)
        self._add_stdio_peers(items)
        if len(self._hashes) > MAX_HASH_CACHE:
            self._hashes.clear()
        if self._denied:
            self.report("exe, cwd or fds of some processes", permission_hint())
        return items

    def _item(
        self,
        proc: psutil.Process,
        names: dict[int, str],
        terminals: dict[str, str | None],
        envs: dict[tuple[str, str | None, tuple[str, ...]], dict[str, str]],
    ) -> dict[str, Any] | None:
        info = proc.info
        pid = info["pid"]
        if info.get("create_time") is None and not os.path.exists(f"{self.context.proc}/{pid}"):
            return None  # exited while we looked
        key = process_key(pid, info.get("create_time"))
        kernel_thread = pid == 2 or info.get("ppid") == 2
        exe = sha256 = None
        deleted = False
        sockets: dict[int, int] = {}
        env: dict[str, str] = {}
        cmdline = [clip(arg, TEXT_MAX) or "" for arg in (info.get("cmdline") or [])[:256]]
        if not kernel_thread:
            exe, deleted = self._exe(pid)
            if exe is not None:
                sha256, unlinked = self._sha256(pid)
                deleted = deleted or unlinked
            sockets = self._stdio_sockets(pid)
            image = (key, exe, tuple(cmdline))
            env = self._envs[image] if image in self._envs else self._env(pid)
            envs[image] = env
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
            "cmdline": cmdline,
            "uid": uid,
            "euid": uids.effective if uids else None,
            "gid": gids.real if gids else None,
            "username": self._username(uid, names),
            "start_time": iso_from_epoch(create_time) if create_time else None,
            "sha256": sha256,
            "exe_deleted": deleted,
            "stdio_sockets": sorted(sockets),
            "cwd": clip(info.get("cwd"), TEXT_MAX),
            "terminal": clip(terminals[key], SHORT_MAX),
            "stdio_raddr": None,
            "stdio_rport": None,
            "parent_name": None,
            "parent_uid": None,
            "parent_exe": None,
            "env": env,
            "_stdio_inodes": list(sockets.values()),
        }

    @staticmethod
    def _add_parents(items: list[dict[str, Any]]) -> None:
        by_pid = {item["pid"]: item for item in items}
        for item in items:
            parent = by_pid.get(item["ppid"]) if item["ppid"] else None
            if parent is not None:
                item["parent_name"] = parent["name"]
                item["parent_uid"] = parent["uid"]
                item["parent_exe"] = parent["exe"]

    def _add_stdio_peers(self, items: list[dict[str, Any]]) -> None:
        """The remote end of the first connected TCP/UDP socket on fds 0-2 (unix ones have none)."""
        peers: dict[int, tuple[str, int]] | None = None
        for item in items:
            inodes = item.pop("_stdio_inodes")
            if not inodes:
                continue
            if peers is None:  # read the socket table only when some process needs it
                peers = {s.inode: (s.raddr, s.rport) for s in self.table.sockets() if s.rport}
            for inode in inodes:
                if inode in peers:
                    item["stdio_raddr"], item["stdio_rport"] = peers[inode]
                    break

    def _env(self, pid: int) -> dict[str, str]:
        try:
            with open(f"{self.context.proc}/{pid}/environ", "rb") as handle:
                return security_env(handle.read(MAX_ENV_BYTES))
        except PermissionError:
            self._denied = True
        except OSError:
            pass
        return {}

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

    def _stdio_sockets(self, pid: int) -> dict[int, int]:
        """fd -> socket inode, for those of fds 0-2 that are sockets of any kind."""
        sockets = {}
        for fd in (0, 1, 2):
            try:
                target = os.readlink(f"{self.context.proc}/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    sockets[fd] = int(target[8:-1])
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
