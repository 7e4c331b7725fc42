"""The kernel's process events through the netlink proc connector (what ``forkstat`` reads).

Listening needs CAP_NET_ADMIN in the initial user and pid namespaces; elsewhere the kernel
silently sends nothing. :meth:`ProcConnector.open` therefore waits for the kernel's answer to
the subscription and raises OSError when it does not come, so the sensor keeps polling instead.
"""

from __future__ import annotations

import contextlib
import errno
import select
import socket
import struct
from typing import NamedTuple

NETLINK_CONNECTOR = 11
CN_IDX_PROC = 1
CN_VAL_PROC = 1
PROC_CN_MCAST_LISTEN = 1
PROC_CN_MCAST_IGNORE = 2
_NLMSG_DONE = 3

PROC_EVENT_NONE = 0x0
PROC_EVENT_FORK = 0x1
PROC_EVENT_EXEC = 0x2
PROC_EVENT_UID = 0x4
PROC_EVENT_GID = 0x40
PROC_EVENT_EXIT = 0x80000000
#: The events that change what a process snapshot shows.
INTERESTING = {PROC_EVENT_EXEC: "exec", PROC_EVENT_UID: "uid", PROC_EVENT_GID: "gid", PROC_EVENT_EXIT: "exit"}

# nlmsghdr (16 bytes), cn_msg header (20 bytes), then struct proc_event: what, cpu, timestamp
_EVENT_OFFSET = 16 + 20
_DATA_OFFSET = _EVENT_OFFSET + 16


class ProcEvent(NamedTuple):
    """One process event: ``what`` is exec, uid, gid or exit; ``pid`` the thread group id."""

    what: str
    pid: int


def _control(op: int) -> bytes:
    cn_msg = struct.pack("=IIIIHHI", CN_IDX_PROC, CN_VAL_PROC, 0, 0, 4, 0, op)
    return struct.pack("=IHHII", 16 + len(cn_msg), _NLMSG_DONE, 0, 0, 0) + cn_msg


def parse_events(data: bytes) -> tuple[list[ProcEvent], bool]:
    """The interesting events of one datagram, and whether it held any proc event at all."""
    events: list[ProcEvent] = []
    seen = False
    offset = 0
    while offset + _DATA_OFFSET + 8 <= len(data):
        length = struct.unpack_from("=I", data, offset)[0]
        (what,) = struct.unpack_from("=I", data, offset + _EVENT_OFFSET)
        seen = True
        name = INTERESTING.get(what)
        if name is not None:
            pid, tgid = struct.unpack_from("=II", data, offset + _DATA_OFFSET)
            if what != PROC_EVENT_EXIT or pid == tgid:  # a thread's exit changes nothing
                events.append(ProcEvent(name, tgid))
        if length < 16:
            break
        offset += (length + 3) & ~3
    return events, seen


class ProcConnector:
    """A subscription to process events; :meth:`read` returns what arrived since last time."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        #: Events were lost (the socket buffer overflowed): rescan everything.
        self.overflowed = False

    @classmethod
    def open(cls, confirm_timeout: float = 1.0) -> ProcConnector:
        """Subscribe; raises OSError when not allowed or when the kernel does not answer."""
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, NETLINK_CONNECTOR)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024 * 1024)
            sock.bind((0, CN_IDX_PROC))
            sock.send(_control(PROC_CN_MCAST_LISTEN))
            ready, _, _ = select.select([sock], [], [], confirm_timeout)
            if not ready:
                raise OSError(errno.EPERM, "the kernel sends no process events here (a container?)")
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        return cls(sock)

    def fileno(self) -> int:
        """The descriptor to wait on with select/poll."""
        return self.sock.fileno()

    def read(self) -> list[ProcEvent]:
        """The interesting events waiting now."""
        events: list[ProcEvent] = []
        for _ in range(1024):  # bounded: a fork bomb must not keep us here
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    self.overflowed = True
                    continue
                raise
            events.extend(parse_events(data)[0])
        return events

    def close(self) -> None:
        """Unsubscribe and close."""
        with contextlib.suppress(OSError):
            self.sock.send(_control(PROC_CN_MCAST_IGNORE))
        self.sock.close()
