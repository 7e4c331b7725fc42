"""The live loop's fast path: the task list and its sockets read straight from guest RAM.

Volatility finds the kernel once (banner, ISF, KASLR shift, page tables); this reads what a
scan needs from there on, with the same ISF's offsets, through a 4-level page walk over the
guest RAM file mapped read-only — no copy, no object model, tens of milliseconds. Tests check
its results against Volatility's ``linux.pslist`` and ``linux.sockstat`` on the same memory.
"""

from __future__ import annotations

import ipaddress
import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vigil.errors import VigilError

PAGE = 4096
ADDRESS_BITS = 0x000F_FFFF_FFFF_F000  # the physical address in a page-table entry
PRESENT, LARGE = 0x1, 0x80
U64 = struct.Struct("<Q")
I32 = struct.Struct("<i")
U32 = struct.Struct("<I")
U16 = struct.Struct("<H")
MAX_TASKS = 65536
MAX_FDS = 65536

TCP_STATES = {1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2",
              6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN",
              11: "CLOSING", 12: "NEW_SYN_RECV"}
AF_INET, AF_INET6 = 2, 10
SOCK_STREAM, SOCK_DGRAM = 1, 2


class ScanError(VigilError):
    """Guest memory did not read as expected (an address not mapped, a broken list)."""


@dataclass(frozen=True)
class KernelLocation:
    """Where Volatility found the kernel: what the fast path needs to read it."""

    dtb: int
    #: virtual KASLR shift, added to the ISF's link-time symbol addresses
    virtual_offset: int


class Layout:
    """Field offsets out of an ISF, anonymous members searched through."""

    def __init__(self, isf: dict[str, Any]) -> None:
        self.types = isf["user_types"]
        self.symbols = isf["symbols"]

    def offset(self, type_name: str, path: str) -> int:
        total = 0
        current = type_name
        for name in path.split("."):
            found = self._find(current, name)
            if found is None:
                raise ScanError(f"{current} has no field {name} in this ISF")
            delta, descriptor = found
            total += delta
            current = descriptor.get("name", "")
        return total

    def _find(self, type_name: str, field: str) -> tuple[int, dict[str, Any]] | None:
        fields = self.types[type_name]["fields"]
        if field in fields:
            return int(fields[field]["offset"]), fields[field]["type"]
        for member in fields.values():
            if member.get("anonymous"):
                inner = self._find(member["type"]["name"], field)
                if inner is not None:
                    return int(member["offset"]) + inner[0], inner[1]
        return None

    def symbol(self, name: str) -> int:
        return int(self.symbols[name]["address"])


class GuestMemory:
    """Guest-physical memory from a RAM file (or raw image), read through the guest's page
    tables. Guest-physical address = file offset (QEMU's RAM below the PCI hole, the lab's
    case); reading live is safe: torn values are caught by the walks' bounds."""

    def __init__(self, path: Path) -> None:
        self._file = path.open("rb")
        self.map = mmap.mmap(self._file.fileno(), 0, prot=mmap.PROT_READ)
        self.size = len(self.map)

    def close(self) -> None:
        self.map.close()
        self._file.close()

    def _entry(self, table: int, index: int) -> int:
        at = table + index * 8
        if at + 8 > self.size:
            raise ScanError(f"page table at {table:#x} is outside guest memory")
        return int(U64.unpack_from(self.map, at)[0])

    def translate(self, dtb: int, va: int) -> int:
        """Guest-physical address of a kernel virtual address (4-level paging)."""
        table = dtb & ADDRESS_BITS
        for level, shift in enumerate((39, 30, 21, 12)):
            entry = self._entry(table, (va >> shift) & 0x1FF)
            if not entry & PRESENT:
                raise ScanError(f"{va:#x} is not mapped")
            if level in (1, 2) and entry & LARGE:  # 1 GiB or 2 MiB page
                size = 1 << shift
                return (entry & ADDRESS_BITS & ~(size - 1)) | (va & (size - 1))
            table = entry & ADDRESS_BITS
        return table | (va & (PAGE - 1))


class FastScan:
    """Processes and their sockets from one guest's memory."""

    def __init__(self, memory: GuestMemory, isf: dict[str, Any], where: KernelLocation) -> None:
        self.mem = memory
        self.where = where
        self.layout = lay = Layout(isf)
        self._pages: dict[int, int] = {}
        self.o = {
            "tasks": lay.offset("task_struct", "tasks"),
            "pid": lay.offset("task_struct", "pid"),
            "tgid": lay.offset("task_struct", "tgid"),
            "comm": lay.offset("task_struct", "comm"),
            "real_parent": lay.offset("task_struct", "real_parent"),
            "cred": lay.offset("task_struct", "cred"),
            "files": lay.offset("task_struct", "files"),
            "uid": lay.offset("cred", "uid"),
            "euid": lay.offset("cred", "euid"),
            "fdt": lay.offset("files_struct", "fdt"),
            "max_fds": lay.offset("fdtable", "max_fds"),
            "fd": lay.offset("fdtable", "fd"),
            "f_op": lay.offset("file", "f_op"),
            "private_data": lay.offset("file", "private_data"),
            "sk": lay.offset("socket", "sk"),
            "sock_type": lay.offset("socket", "type"),
            "family": lay.offset("sock_common", "skc_family"),
            "state": lay.offset("sock_common", "skc_state"),
            "daddr": lay.offset("sock_common", "skc_daddr"),
            "saddr": lay.offset("sock_common", "skc_rcv_saddr"),
            "dport": lay.offset("sock_common", "skc_dport"),
            "num": lay.offset("sock_common", "skc_num"),
            "v6_daddr": lay.offset("sock_common", "skc_v6_daddr"),
            "v6_saddr": lay.offset("sock_common", "skc_v6_rcv_saddr"),
            "protocol": lay.offset("sock", "sk_protocol"),
        }
        self.init_task = lay.symbol("init_task") + where.virtual_offset
        self.socket_fops = lay.symbol("socket_file_ops") + where.virtual_offset

    # --- reading --------------------------------------------------------------------------

    def _phys(self, va: int) -> int:
        page = va & ~(PAGE - 1)
        base = self._pages.get(page)
        if base is None:
            base = self._pages[page] = self.mem.translate(self.where.dtb, page)
        return base + (va & (PAGE - 1))

    def read(self, va: int, size: int) -> bytes:
        out = b""
        while size > 0:
            chunk = min(size, PAGE - (va & (PAGE - 1)))
            at = self._phys(va)
            out += self.mem.map[at:at + chunk]
            va += chunk
            size -= chunk
        return out

    def u64(self, va: int) -> int:
        at = self._phys(va)
        if va & (PAGE - 1) <= PAGE - 8:
            return int(U64.unpack_from(self.mem.map, at)[0])
        return int(U64.unpack(self.read(va, 8))[0])

    def u32(self, va: int) -> int:
        return int(U32.unpack(self.read(va, 4))[0])

    def i32(self, va: int) -> int:
        return int(I32.unpack(self.read(va, 4))[0])

    def u16(self, va: int) -> int:
        return int(U16.unpack(self.read(va, 2))[0])

    # --- walking --------------------------------------------------------------------------

    def tasks(self) -> list[int]:
        """Addresses of the thread-group leaders on the kernel's task list, as ``pslist``."""
        self._pages.clear()  # a live guest remaps pages between scans
        out = []
        head = self.init_task + self.o["tasks"]
        link = self.u64(head)
        while link != head:
            out.append(link - self.o["tasks"])
            if len(out) > MAX_TASKS:
                raise ScanError("the task list does not close: memory changed under the scan?")
            link = self.u64(link)
        return out

    def process(self, task: int) -> dict[str, Any]:
        o = self.o
        cred = self.u64(task + o["cred"])
        parent = self.u64(task + o["real_parent"])
        return {
            "pid": self.i32(task + o["tgid"]),
            "ppid": self.i32(parent + o["tgid"]) if parent else 0,
            "name": self.read(task + o["comm"], 16).split(b"\0", 1)[0].decode("utf-8", "replace"),
            "uid": self.u32(cred + o["uid"]) if cred else None,
            "euid": self.u32(cred + o["euid"]) if cred else None,
        }

    def processes(self) -> list[dict[str, Any]]:
        procs = []
        for task in self.tasks():
            try:
                procs.append(self.process(task))
            except ScanError:
                continue  # a task exiting while we read it
        return procs

    def sockets(self, tasks: list[int] | None = None) -> list[dict[str, Any]]:
        """Every IPv4/IPv6 socket on a process's open files (``sockstat``'s view)."""
        o = self.o
        out = []
        for task in tasks if tasks is not None else self.tasks():
            try:
                pid = self.i32(task + o["tgid"])
                name = self.read(task + o["comm"], 16).split(b"\0", 1)[0].decode("utf-8", "replace")
                files = self.u64(task + o["files"])
                if not files:
                    continue
                fdt = self.u64(files + o["fdt"])
                count = min(self.u32(fdt + o["max_fds"]), MAX_FDS)
                array = self.u64(fdt + o["fd"])
                table = self.read(array, count * 8)
            except ScanError:
                continue
            for fd in range(count):
                file = int(U64.unpack_from(table, fd * 8)[0])
                if not file:
                    continue
                try:
                    if self.u64(file + o["f_op"]) != self.socket_fops:
                        continue
                    sock = self.u64(file + o["private_data"])
                    entry = self._socket(sock)
                except ScanError:
                    continue
                if entry is not None:
                    out.append({"pid": pid, "process": name, "fd": fd, **entry})
        return out

    def _socket(self, sock: int) -> dict[str, Any] | None:
        o = self.o
        sk = self.u64(sock + o["sk"])
        if not sk:
            return None
        family = self.u16(sk + o["family"])
        if family not in (AF_INET, AF_INET6):
            return None
        kind = self.u16(sock + o["sock_type"])
        protocol = self.u16(sk + o["protocol"])
        proto = {6: "TCP", 17: "UDP", 1: "ICMP", 58: "ICMPv6", 255: "RAW"}.get(protocol,
                                                                               str(protocol))
        state_code = self.read(sk + o["state"], 1)[0]
        if family == AF_INET:
            laddr = str(ipaddress.IPv4Address(self.read(sk + o["saddr"], 4)))
            raddr = str(ipaddress.IPv4Address(self.read(sk + o["daddr"], 4)))
        else:
            laddr = str(ipaddress.IPv6Address(self.read(sk + o["v6_saddr"], 16)))
            raddr = str(ipaddress.IPv6Address(self.read(sk + o["v6_daddr"], 16)))
        rport = int.from_bytes(self.read(sk + o["dport"], 2), "big")
        lport = self.u16(sk + o["num"])
        state = TCP_STATES.get(state_code, str(state_code)) if kind == SOCK_STREAM else \
            ("ESTABLISHED" if state_code == 1 else "UNCONNECTED")
        return {"family": "AF_INET" if family == AF_INET else "AF_INET6", "proto": proto,
                "laddr": laddr, "lport": lport, "raddr": raddr, "rport": rport, "state": state}
