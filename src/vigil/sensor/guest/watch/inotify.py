"""inotify through ctypes: the libc calls, the event masks and a small reader.

The standard library has no inotify binding; three libc calls are enough. :class:`Inotify`
raises OSError when inotify is unavailable (no libc, a seccomp filter, too many instances), and
its callers then keep polling.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import struct
from typing import NamedTuple

IN_ACCESS = 0x001
IN_MODIFY = 0x002
IN_ATTRIB = 0x004
IN_CLOSE_WRITE = 0x008
IN_OPEN = 0x020
IN_MOVED_FROM = 0x040
IN_MOVED_TO = 0x080
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
IN_ONLYDIR = 0x01000000
IN_DONT_FOLLOW = 0x02000000
IN_EXCL_UNLINK = 0x04000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

#: A watched file changed, was replaced, moved or deleted.
FILE_CHANGES = IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_DELETE_SELF | IN_MOVE_SELF
#: Something appeared in, or left, a watched directory (or a file in it changed).
DIR_CHANGES = IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_ATTRIB | IN_CLOSE_WRITE | IN_MODIFY
#: A name appeared in or left a directory (not the writes to its files).
DIR_ENTRIES = IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_ONLYDIR

_HEADER = struct.Struct("=iIII")
_libc: ctypes.CDLL | None = None


class InotifyEvent(NamedTuple):
    """One inotify event: the watch, what happened and the name inside a watched directory."""

    wd: int
    mask: int
    cookie: int
    name: str


def _load_libc() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        name = ctypes.util.find_library("c") or "libc.so.6"
        try:
            libc = ctypes.CDLL(name, use_errno=True)
            libc.inotify_init1.argtypes = [ctypes.c_int]
            libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
            libc.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
        except (OSError, AttributeError) as exc:
            raise OSError(errno.ENOSYS, f"no inotify in the C library: {exc}") from None
        _libc = libc
    return _libc


def parse_events(data: bytes) -> list[InotifyEvent]:
    """The events packed in one ``read()`` of an inotify descriptor."""
    events = []
    offset = 0
    while offset + _HEADER.size <= len(data):
        wd, mask, cookie, length = _HEADER.unpack_from(data, offset)
        raw = data[offset + _HEADER.size : offset + _HEADER.size + length]
        name = raw.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        events.append(InotifyEvent(wd, mask, cookie, name))
        offset += _HEADER.size + length
    return events


class Inotify:
    """One non-blocking inotify instance (close it when done)."""

    def __init__(self) -> None:
        libc = _load_libc()
        fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            code = ctypes.get_errno()
            raise OSError(code, f"inotify_init1: {os.strerror(code)}")
        self._libc = libc
        self.fd = fd

    def fileno(self) -> int:
        """The descriptor to wait on with select/poll."""
        return self.fd

    def add_watch(self, path: str, mask: int) -> int:
        """Watch ``path`` (replacing an earlier mask for the same inode); returns the wd."""
        wd = self._libc.inotify_add_watch(self.fd, os.fsencode(path), mask)
        if wd < 0:
            code = ctypes.get_errno()
            raise OSError(code, f"inotify_add_watch {path}: {os.strerror(code)}")
        return int(wd)

    def remove_watch(self, wd: int) -> None:
        """Stop a watch (ignoring one the kernel already dropped)."""
        self._libc.inotify_rm_watch(self.fd, wd)

    def read(self) -> list[InotifyEvent]:
        """The events waiting now (none when there are none)."""
        try:
            data = os.read(self.fd, 64 * 1024)
        except BlockingIOError:
            return []
        return parse_events(data)

    def close(self) -> None:
        """Close the descriptor (every watch goes with it)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
