"""The kernel's TCP/UDP sockets and who owns each one.

The socket list comes from netlink ``sock_diag`` (what ``ss`` uses), which costs a fraction of a
millisecond; reading ``/proc/net/{tcp,tcp6,udp,udp6}`` — what ``psutil.net_connections`` does —
makes the kernel walk its whole connection hash table for each file, several milliseconds on a
machine with much memory. The /proc files remain the fallback when netlink is refused.

Owners are found by scanning ``/proc/PID/fd`` only when a socket appears whose owner is not
known yet. Known owners are remembered as (pid, fd) and re-checked with a single ``readlink``
per socket; the processes that already own sockets are scanned first, since they are the
likeliest owners of new ones (a server accepting connections).
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
import sys
import threading
import time
from typing import NamedTuple

PROTOCOLS = ("tcp", "tcp6", "udp", "udp6")

TCP_STATES = {
    "01": "ESTABLISHED",
    "02": "SYN_SENT",
    "03": "SYN_RECV",
    "04": "FIN_WAIT1",
    "05": "FIN_WAIT2",
    "06": "TIME_WAIT",
    "07": "CLOSE",
    "08": "CLOSE_WAIT",
    "09": "LAST_ACK",
    "0A": "LISTEN",
    "0B": "CLOSING",
    "0C": "NEW_SYN_RECV",
}


class Socket(NamedTuple):
    """One row of a kernel socket table."""

    proto: str
    laddr: str
    lport: int
    raddr: str
    rport: int
    state: str  # TCP state name; for UDP "ESTABLISHED" when connected, else "CLOSE"
    uid: int
    inode: int

    @property
    def listening(self) -> bool:
        """A TCP socket in LISTEN, or a UDP socket that is bound but not connected."""
        if self.proto.startswith("tcp"):
            return self.state == "LISTEN"
        return self.state != "ESTABLISHED"


_address_cache: dict[str, str] = {}


def decode_address(hex_addr: str) -> str:
    """A /proc/net address (host byte order, 32-bit words) as an IP address string."""
    text = _address_cache.get(hex_addr)
    if text is None:
        raw = bytes.fromhex(hex_addr)
        if sys.byteorder == "little":  # the kernel prints each 32-bit word in host order
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
        text = _raw_address(raw)
        if len(_address_cache) > 4096:
            _address_cache.clear()
        _address_cache[hex_addr] = text
    return text


def parse_table(proto: str, text: str) -> list[Socket]:
    """The sockets of one /proc/net table's text."""
    sockets = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10:
            continue
        local, remote = fields[1], fields[2]
        lhex, lport = local.split(":")
        rhex, rport = remote.split(":")
        state = TCP_STATES.get(fields[3], fields[3])
        sockets.append(
            Socket(
                proto=proto,
                laddr=decode_address(lhex),
                lport=int(lport, 16),
                raddr=decode_address(rhex),
                rport=int(rport, 16),
                state=state,
                uid=int(fields[7]),
                inode=int(fields[9]),
            )
        )
    return sockets


_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST_DUMP = 0x1 | 0x300
_NLMSG_ERROR = 2
_NLMSG_DONE = 3
_NETLINK_QUERIES = {
    "tcp": (socket.AF_INET, socket.IPPROTO_TCP),
    "tcp6": (socket.AF_INET6, socket.IPPROTO_TCP),
    "udp": (socket.AF_INET, socket.IPPROTO_UDP),
    "udp6": (socket.AF_INET6, socket.IPPROTO_UDP),
}
_raw_address_cache: dict[bytes, str] = {}


def _raw_address(raw: bytes) -> str:
    text = _raw_address_cache.get(raw)
    if text is None:
        ip = ipaddress.IPv4Address(raw) if len(raw) == 4 else ipaddress.IPv6Address(raw)
        text = str(ip)
        if len(_raw_address_cache) > 4096:
            _raw_address_cache.clear()
        _raw_address_cache[raw] = text
    return text


def read_netlink(proto: str) -> list[Socket]:
    """The sockets of one protocol from netlink sock_diag (raises OSError when refused)."""
    family, ip_proto = _NETLINK_QUERIES[proto]
    # struct inet_diag_req_v2: family, protocol, ext, pad, states, then a zeroed inet_diag_sockid
    request = struct.pack("=BBBxI", family, ip_proto, 0, 0xFFFFFFFF) + bytes(48)
    header = struct.pack("=IHHII", 16 + len(request), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST_DUMP, 1, 0)
    width = 4 if family == socket.AF_INET else 16
    sockets: list[Socket] = []
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as nl:
        nl.settimeout(5)
        nl.sendall(header + request)
        while True:
            data = nl.recv(262144)
            if not data:
                raise OSError("netlink sock_diag closed the connection")
            offset = 0
            while offset + 16 <= len(data):
                length, kind = struct.unpack_from("=IH", data, offset)
                if kind == _NLMSG_DONE:
                    return sockets
                if kind == _NLMSG_ERROR:
                    (error,) = struct.unpack_from("=i", data, offset + 16)
                    raise OSError(-error, f"netlink sock_diag refused {proto}: {os.strerror(-error)}")
                # struct inet_diag_msg: family, state, timer, retrans, sockid, expires, rqueue,
                # wqueue, uid, inode
                body = offset + 16
                state = data[body + 1]
                sport, dport = struct.unpack_from(">HH", data, body + 4)
                src = data[body + 8 : body + 8 + width]
                dst = data[body + 24 : body + 24 + width]
                uid, inode = struct.unpack_from("=II", data, body + 64)
                sockets.append(
                    Socket(
                        proto=proto,
                        laddr=_raw_address(src),
                        lport=sport,
                        raddr=_raw_address(dst),
                        rport=dport,
                        state=TCP_STATES.get(f"{state:02X}", str(state)),
                        uid=uid,
                        inode=inode,
                    )
                )
                offset += (length + 3) & ~3
                if length == 0:
                    raise OSError("malformed netlink message")


def read_proc(proc: str, proto: str) -> list[Socket]:
    """The sockets of one protocol from /proc/net (empty when the kernel has no such table)."""
    try:
        with open(f"{proc}/net/{proto}", encoding="ascii") as handle:
            return parse_table(proto, handle.read())
    except FileNotFoundError:
        return []  # no IPv6 in this kernel


class SocketTable:
    """The current sockets and their owning processes; shared by the connection collectors."""

    def __init__(self, proc: str = "/proc", *, use_netlink: bool = True) -> None:
        self.proc = proc
        #: Protocols read through netlink; one that netlink refuses falls back to /proc for good.
        self.netlink = set(PROTOCOLS) if use_netlink and proc == "/proc" else set()
        self._sockets: list[Socket] = []
        self._read_at = -1.0
        self._owners: dict[int, tuple[int, int]] = {}  # inode -> (pid, fd)
        self._unresolvable: set[int] = set()
        self._lock = threading.Lock()
        self.denied = False

    def sockets(self, max_age: float = 0.5) -> list[Socket]:
        """Every TCP/UDP socket, re-read when the last read is older than ``max_age`` seconds."""
        with self._lock:
            now = time.monotonic()
            if now - self._read_at > max_age:
                sockets = []
                for proto in PROTOCOLS:
                    if proto in self.netlink:
                        try:
                            sockets.extend(read_netlink(proto))
                            continue
                        except OSError:
                            self.netlink.discard(proto)
                    sockets.extend(read_proc(self.proc, proto))
                self._sockets = sockets
                self._read_at = now
                self._resolve({s.inode for s in sockets if s.inode})
            return self._sockets

    def owner(self, inode: int) -> int | None:
        """The pid that holds socket ``inode`` open, when known."""
        found = self._owners.get(inode)
        return found[0] if found else None

    def process_name(self, pid: int | None) -> str | None:
        """The short name (comm) of ``pid``."""
        if pid is None:
            return None
        try:
            with open(f"{self.proc}/{pid}/comm", encoding="utf-8", errors="replace") as handle:
                return handle.read().rstrip("\n")
        except OSError:
            return None

    def _resolve(self, inodes: set[int]) -> None:
        # forget sockets that are gone, keep owners that still hold their socket
        self._unresolvable &= inodes
        kept = {}
        for inode, (pid, fd) in self._owners.items():
            if inode in inodes and self._fd_inode(pid, fd) == inode:
                kept[inode] = (pid, fd)
        self._owners = kept
        missing = inodes - kept.keys() - self._unresolvable
        if not missing:
            return
        likely = sorted({pid for pid, _ in kept.values()})
        missing = self._scan(likely, missing)
        if missing:
            others = sorted(set(self._pids()) - set(likely))
            missing = self._scan(others, missing)
        self._unresolvable |= missing

    def _scan(self, pids: list[int], missing: set[int]) -> set[int]:
        """Read the fds of ``pids``, recording the owners of sockets; returns what is left."""
        missing = set(missing)
        for pid in pids:
            fd_dir = f"{self.proc}/{pid}/fd"
            try:
                fds = os.listdir(fd_dir)
            except PermissionError:
                self.denied = True
                continue
            except OSError:
                continue
            for fd in fds:
                try:
                    target = os.readlink(f"{fd_dir}/{fd}")
                except OSError:
                    continue
                if target.startswith("socket:["):
                    inode = int(target[8:-1])
                    if inode in missing:
                        self._owners[inode] = (pid, int(fd))
                        missing.discard(inode)
            if not missing:
                break
        return missing

    def _fd_inode(self, pid: int, fd: int) -> int | None:
        try:
            target = os.readlink(f"{self.proc}/{pid}/fd/{fd}")
        except OSError:
            return None
        return int(target[8:-1]) if target.startswith("socket:[") else None

    def _pids(self) -> list[int]:
        return [int(name) for name in os.listdir(self.proc) if name.isdigit()]


def shared_socket_table(shared: dict[str, object], proc: str) -> SocketTable:
    """The one SocketTable of a collector context (so fds are scanned once for both users)."""
    table = shared.get("socket_table")
    if not isinstance(table, SocketTable):
        table = SocketTable(proc)
        shared["socket_table"] = table
    return table
