"""Boot, watch and stop lab VMs under QEMU, by pid and through their QMP sockets.

Each VM gets its RAM in a shared file (``memory-backend-file,share=on``) that the host sensor can
map, a QMP socket, user-mode networking with its SSH port forwarded on a loopback port, and its
serial console in a log file. The root disk is the lab image opened with ``snapshot=on``: every
boot starts clean and the image is never written.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qemu.qmp import QMPClient

from vigil.lab.image import Image, LabError, cache_dir

QEMU = "qemu-system-x86_64"
#: a kernel that boots reaches its panic (no root disk) in about a second under KVM; nested KVM
#: on some clouds hangs before printing anything
KVM_PROBE_TIMEOUT = 15.0


@dataclass(frozen=True)
class VMSpec:
    """What one VM is booted with."""

    name: str
    smbios_uuid: str
    memory_mib: int
    ssh_port: int
    run_dir: Path
    image: Image
    append: str
    accel: str
    kernel: str = "cloud"

    @property
    def ram_file(self) -> Path:
        return ram_dir() / f"{self.smbios_uuid}.ram"

    @property
    def qmp_socket(self) -> Path:
        return self.run_dir / f"{self.name}.qmp"

    @property
    def serial_log(self) -> Path:
        return self.run_dir / f"{self.name}.serial.log"

    @property
    def qemu_log(self) -> Path:
        return self.run_dir / f"{self.name}.qemu.log"


def ram_dir() -> Path:
    """Guest RAM files live in shared memory (tmpfs), not on disk."""
    return Path(os.environ.get("VIGIL_LAB_RAM_DIR", "/dev/shm/vigil-lab"))  # noqa: S108


def qemu_binary() -> str:
    path = shutil.which(QEMU)
    if path is None:
        raise LabError(f"{QEMU} is not installed (Debian package qemu-system-x86; "
                       "`make system-deps` installs it)")
    return path


def command(spec: VMSpec) -> list[str]:
    """The QEMU command line of a VM."""
    # la57=off: 4-level paging, which Volatility 3's Intel layers read (TCG's "max" CPU would
    # otherwise offer 5-level paging, and the kernel would use it).
    cpu = ("host" if spec.accel == "kvm" else "max") + ",la57=off"
    return [
        qemu_binary(), "-name", f"{spec.name},process=vigil-lab-{spec.name}",
        "-uuid", spec.smbios_uuid,
        "-machine", "q35,memory-backend=ram", "-accel", spec.accel, "-cpu", cpu, "-smp", "1",
        "-m", f"{spec.memory_mib}M",
        "-object", f"memory-backend-file,id=ram,size={spec.memory_mib}M,"
                   f"mem-path={spec.ram_file},share=on",
        "-kernel", str(spec.image.boot_files(spec.kernel)[0]),
        "-initrd", str(spec.image.boot_files(spec.kernel)[1]),
        "-append", spec.append,
        "-drive", f"file={spec.image.disk},format=raw,if=virtio,snapshot=on",
        "-netdev", f"user,id=net0,hostfwd=tcp:127.0.0.1:{spec.ssh_port}-:22",
        "-device", "virtio-net-pci,netdev=net0",
        "-qmp", f"unix:{spec.qmp_socket},server=on,wait=off",
        "-serial", f"file:{spec.serial_log}",
        "-display", "none", "-vga", "none", "-monitor", "none", "-no-user-config",
    ]


def start(spec: VMSpec) -> int:
    """Start QEMU in its own session (it outlives ``vigil lab up``); returns its pid."""
    spec.run_dir.mkdir(parents=True, exist_ok=True)
    ram_dir().mkdir(parents=True, exist_ok=True, mode=0o700)
    spec.qmp_socket.unlink(missing_ok=True)
    with spec.qemu_log.open("wb") as log:
        proc = subprocess.Popen(command(spec), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True)
    time.sleep(0.3)
    if proc.poll() is not None:
        raise LabError(f"QEMU for {spec.name} exited at once ({proc.returncode}): "
                       f"{spec.qemu_log.read_text(errors='replace').strip()[-800:]}")
    return proc.pid


def is_ours(pid: int, marker: str) -> bool:
    """Whether ``pid`` is alive and still the QEMU we started (not a recycled pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return marker.encode() in cmdline or any(marker.encode() in part for part in cmdline)


def running_in(run_dir: Path) -> dict[int, str]:
    """QEMU processes whose QMP socket is in ``run_dir``, by pid (VM name as value): what a
    lost or overwritten run state would otherwise leave running."""
    prefix = f"unix:{run_dir.resolve()}/".encode()
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        for arg in argv:
            if arg.startswith(prefix) and arg.endswith(b",server=on,wait=off"):
                found[int(entry.name)] = arg[len(prefix):].split(b".qmp")[0].decode()
    return found


async def _qmp(socket: Path, name: str, args: dict[str, Any] | None, timeout: float) -> Any:
    client = QMPClient(f"vigil-lab-{socket.stem}")
    await asyncio.wait_for(client.connect(str(socket)), timeout)
    try:
        return await asyncio.wait_for(client.execute(name, args), timeout)
    finally:
        await client.disconnect()


def qmp(socket: Path, name: str, args: dict[str, Any] | None = None, *,
        timeout: float = 5.0) -> Any:
    """Run one QMP command on a VM's socket and return its result."""
    return asyncio.run(_qmp(socket, name, args, timeout))


def stop(pid: int, marker: str, socket: Path, *, grace: float = 30.0) -> str:
    """Stop a VM: ACPI power-down through QMP (the guest shuts down cleanly and its sensor says
    goodbye), then ``quit``, then SIGTERM and SIGKILL to the pid. Returns how it ended."""
    if not is_ours(pid, marker):
        return "not running"
    how = "powered down"
    try:
        qmp(socket, "system_powerdown")
    except Exception:  # noqa: BLE001  (no QMP answer: go on by pid)
        how = "stopped"
    if _wait_gone(pid, marker, grace):
        return how
    for sig, what in ((signal.SIGTERM, "terminated"), (signal.SIGKILL, "killed")):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return what
        if _wait_gone(pid, marker, 10):
            return what
    raise LabError(f"QEMU pid {pid} did not stop")


def _wait_gone(pid: int, marker: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(pid)
        if not is_ours(pid, marker):
            return True
        time.sleep(0.2)
    return False


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def probe_accel(image: Image) -> str:
    """``kvm`` when a KVM guest boots here, else ``tcg``; remembered until the host reboots.

    The probe boots the lab kernel with no root disk under KVM and waits for its panic (QEMU then
    exits, ``-no-reboot``). Nested KVM that hangs in early boot times out and gives TCG.
    """
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "tcg"
    boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    memo = cache_dir() / "accel.json"
    try:
        saved = json.loads(memo.read_text())
        if saved.get("boot_id") == boot_id and saved.get("accel") in ("kvm", "tcg"):
            return str(saved["accel"])
    except (OSError, ValueError):
        pass
    cmd = [qemu_binary(), "-accel", "kvm", "-cpu", "host", "-m", "256M", "-kernel",
           str(image.kernel), "-append", "console=ttyS0 panic=-1", "-no-reboot", "-display",
           "none", "-vga", "none", "-serial", "none", "-monitor", "none", "-nodefaults"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        proc.wait(timeout=KVM_PROBE_TIMEOUT)
        accel = "kvm" if proc.returncode == 0 else "tcg"
    except subprocess.TimeoutExpired:
        accel = "tcg"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    memo.parent.mkdir(parents=True, exist_ok=True)
    memo.write_text(json.dumps({"boot_id": boot_id, "accel": accel}))
    return accel


def new_uuid() -> str:
    return str(uuid.uuid4())
