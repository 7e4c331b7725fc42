"""The QEMU driver: the VMs running on this host, found from their QEMU processes, and their
memory acquired through QMP.

Nothing is configured by hand: a VM is any ``qemu-system-*`` process; its name, SMBIOS UUID,
QMP socket and RAM file are read from its command line. A VM whose RAM is a shared file
(``memory-backend-file,share=on``, as the lab's are) can be read live by mapping that file.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from vigil.errors import VigilError

CHUNK = 8 << 20


class DriverError(VigilError):
    """A VM cannot be found or read, and why."""


@dataclass(frozen=True)
class QemuVM:
    pid: int
    name: str
    uuid: str | None
    qmp_socket: str | None
    ram_file: str | None
    memory_mib: int | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _options(text: str) -> dict[str, str]:
    """``a=1,b=2`` (QEMU's option syntax) as a dict; a bare first word is ``type``."""
    out: dict[str, str] = {}
    for n, part in enumerate(text.split(",")):
        key, sep, value = part.partition("=")
        if sep:
            out[key] = value
        elif n == 0:
            out["type"] = key
    return out


def _size_mib(text: str, bare: str = "B") -> int | None:
    """A QEMU size in MiB; a number with no unit is in ``bare`` units (MiB for ``-m``, bytes
    for a memory backend's ``size``)."""
    match = re.fullmatch(r"(\d+)([BKMGT]?)", text.strip().upper())
    if not match:
        return None
    scale = {"B": 1 / (1 << 20), "K": 1 / 1024, "M": 1, "G": 1024, "T": 1 << 20}
    return int(int(match.group(1)) * scale[match.group(2) or bare])


def parse_command_line(pid: int, argv: list[str]) -> QemuVM:
    """What a QEMU command line says about its VM."""
    name = uuid = qmp = ram = None
    memory = None
    for flag, value in zip(argv, argv[1:], strict=False):
        if flag == "-name":
            name = _options(value).get("guest") or _options(value).get("type")
        elif flag == "-uuid":
            uuid = value.lower()
        elif flag == "-qmp":
            address = _options(value).get("type", "")
            if address.startswith("unix:"):
                qmp = address[len("unix:"):]
        elif flag == "-object" and value.startswith("memory-backend-file"):
            backend = _options(value)
            ram = backend.get("mem-path")
            memory = _size_mib(backend.get("size", "")) or memory
        elif flag == "-m":
            opts = _options(value)
            memory = memory or _size_mib(opts.get("size") or opts.get("type", ""), "M")
    return QemuVM(pid, name or f"qemu-{pid}", uuid, qmp, ram, memory)


def discover(proc: Path = Path("/proc")) -> list[QemuVM]:
    """Every QEMU VM running on this host."""
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = [a.decode(errors="replace") for a in
                    (entry / "cmdline").read_bytes().split(b"\0") if a]
        except OSError:
            continue
        if argv and os.path.basename(argv[0]).startswith("qemu-system-"):
            found.append(parse_command_line(int(entry.name), argv))
    return sorted(found, key=lambda vm: vm.name)


def find(key: str) -> QemuVM:
    """A running VM by name, SMBIOS UUID or pid."""
    vms = discover()
    for vm in vms:
        if key in (vm.name, vm.uuid, str(vm.pid)):
            return vm
    names = ", ".join(vm.name for vm in vms) or "none"
    raise DriverError(f"no running QEMU VM {key!r} (running: {names})")


@dataclass(frozen=True)
class Acquisition:
    path: str
    size: int
    sha256: str
    seconds: float
    paused_s: float
    how: str


def acquire(vm: QemuVM, out: Path) -> Acquisition:
    """The VM's memory, consistent: paused through QMP while its RAM file is copied and hashed
    in one pass (SHA-256 computed at the source), then resumed. A VM without a shared RAM file
    is dumped by QEMU itself (``dump-guest-memory``, ELF core), hashed as it is read back."""
    from vigil.lab.qemu import qmp  # the QMP client the lab uses (qemu.qmp)

    if vm.qmp_socket is None:
        raise DriverError(f"{vm.name} has no QMP socket: start QEMU with -qmp unix:PATH,server")
    socket = Path(vm.qmp_socket)
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    digest = hashlib.sha256()
    running = qmp(socket, "query-status").get("status") == "running"
    if running:
        qmp(socket, "stop")
    paused = time.monotonic()
    try:
        if vm.ram_file:
            how = "RAM file"
            with open(vm.ram_file, "rb") as src, open(out, "xb") as dst:
                while chunk := src.read(CHUNK):
                    digest.update(chunk)
                    dst.write(chunk)
        else:
            how = "dump-guest-memory"
            qmp(socket, "dump-guest-memory", {"paging": False, "protocol": f"file:{out}"},
                timeout=600)
            with open(out, "rb") as src:
                while chunk := src.read(CHUNK):
                    digest.update(chunk)
    finally:
        if running:
            qmp(socket, "cont")
    resumed = time.monotonic()
    os.chmod(out, 0o600)  # evidence
    return Acquisition(str(out), out.stat().st_size, digest.hexdigest(),
                       round(resumed - started, 3), round(resumed - paused, 3), how)


def copy_free_space_ok(out: Path, vm: QemuVM) -> None:
    """Refuse an acquisition that cannot fit where it is going."""
    need = (vm.memory_mib or 0) << 20
    free = shutil.disk_usage(out.parent if out.parent.exists() else Path(".")).free
    if need and free < need:
        raise DriverError(f"{out.parent} has {free >> 20} MiB free; {vm.name} needs "
                          f"{need >> 20} MiB")
