"""Introspection of a real lab VM: symbols derived from its kernel alone (no debug package), and
Volatility's view of its memory agreeing with the guest's own `ps`."""

from __future__ import annotations

import hashlib
import json
import lzma
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import paramiko
import pytest
import volatility3
from tests.conftest import LiveServer, running_server
from tests.harness.figures import report
from tests.harness.procs import VIGIL

from vigil.lab import qemu
from vigil.lab.fleet import LabState
from vigil.lab.image import LAB_PASSWORD, LAB_USER, Image
from vigil.vmi.fastscan import FastScan, GuestMemory, KernelLocation
from vigil.vmi.symbols import load_isf

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    os.geteuid() != 0, reason="the lab builds its image with debootstrap, as root")]


@dataclass
class VM:
    srv: LiveServer
    run: Path
    state: LabState
    symbols: Path
    env: dict[str, str]

    def ssh(self, command: str) -> str:
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(paramiko.AutoAddPolicy())  # noqa: S507  (lab guest)
        client.connect("127.0.0.1", self.state.vms[0].ssh_port, username=LAB_USER,
                       password=LAB_PASSWORD, allow_agent=False, look_for_keys=False, timeout=30)
        try:
            _, out, _ = client.exec_command(command, timeout=60)
            return str(out.read().decode())
        finally:
            client.close()

    def qmp(self, command: str) -> Any:
        return qemu.qmp(Path(self.state.vms[0].qmp_socket), command)

    @property
    def kernel(self) -> Path:
        return Image(Path(self.state.image)).boot_files(self.state.vms[0].kernel)[0]

    def vigil(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([VIGIL, *args], env=self.env, capture_output=True, text=True,
                              timeout=600)


@pytest.fixture(scope="module", params=["cloud", "generic"])
def vm(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VM]:
    """A lab VM booted with Debian's cloud kernel, then one with its generic kernel: symbols
    must come from each kernel alone."""
    kernel = request.param
    base = tmp_path_factory.mktemp(f"vmi-{kernel}")
    run, symbols = base / "run", base / "symbols"
    env = {**os.environ, "VIGIL_SYMBOLS": str(symbols)}
    with running_server(base / "server") as srv:
        token = base / "token"
        token.write_text(srv.admin_token)
        up = subprocess.run([VIGIL, "lab", "up", "--server", srv.url, "--api-token-file",
                             str(token), "--run-dir", str(run), "--kernel", kernel],
                            capture_output=True, text=True, timeout=900, env=env)
        try:
            assert up.returncode == 0, up.stderr[-3000:]
            state = LabState.load(run)
            assert state is not None
            yield VM(srv, run, state, symbols, env)
        finally:
            subprocess.run([VIGIL, "lab", "down", "--run-dir", str(run)], capture_output=True,
                           timeout=120, check=False)


def test_symbols_are_derived_from_the_kernel_alone(vm: VM) -> None:
    kernel = vm.kernel
    started = time.monotonic()
    out = vm.vigil("vmi", "symbols", str(kernel))
    took = time.monotonic() - started
    assert out.returncode == 0, out.stderr
    isf_path = Path(out.stdout.strip())
    assert isf_path.is_relative_to(vm.symbols) and isf_path.name.endswith(".json.xz")
    assert "derived in" in out.stderr and "Linux version 6." in out.stderr
    with lzma.open(isf_path, "rt") as f:
        isf = json.load(f)
    schema = Path(volatility3.__file__).parent / "schemas" / "schema-6.2.0.json"
    jsonschema.validate(isf, json.loads(schema.read_text()))  # Volatility's own ISF schema
    assert isf["user_types"]["task_struct"]["fields"]["comm"]["type"]["count"] == 16
    again = vm.vigil("vmi", "symbols", str(kernel))
    assert again.returncode == 0 and "cached" in again.stderr
    assert Path(again.stdout.strip()) == isf_path
    banner = out.stderr.splitlines()[0].split(" (")[0]
    report(f"vmi: ISF for {banner} derived from its BTF and kallsyms in {took:.1f} s "
           f"({isf_path.stat().st_size // 1024} KiB xz)")


def _guest_ps(vm: VM) -> dict[int, str]:
    lines = vm.ssh("ps -e -o pid=,comm=").splitlines()
    return {int(pid): comm for pid, _, comm in (line.strip().partition(" ") for line in lines)
            if pid.isdigit()}


def _same_name(task_comm: str | None, ps_comm: str) -> bool:
    """The task's comm as ps shows it: cut to 15 characters; a kernel worker's with the name of
    the work it is doing appended (``kworker/0:1-events``), which is not in the task."""
    if task_comm is None:
        return False
    if ps_comm.startswith("kworker/"):
        return ps_comm.split("-", 1)[0] == task_comm.split("-", 1)[0]
    return task_comm == ps_comm[:15]


def test_memory_view_matches_the_guests_ps(vm: VM, tmp_path: Path) -> None:
    """Volatility's pslist on the VM's memory (stock automagic: banner, KASLR, page tables)
    gives the processes `ps` gives inside the guest."""
    listed = vm.vigil("vmi", "vms", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    (found,) = [v for v in json.loads(listed.stdout) if v["uuid"] == vm.state.vms[0].smbios_uuid]
    assert found["name"] == "lab-vm1" and found["ram_file"] == vm.state.vms[0].ram_file
    assert found["memory_mib"] == 768 and found["pid"] == vm.state.vms[0].pid
    before = _guest_ps(vm)
    image = tmp_path / "lab-vm1.raw"
    got = vm.vigil("vmi", "acquire", found["uuid"], str(image))
    assert got.returncode == 0, got.stderr
    acquisition = json.loads(got.stdout)
    assert acquisition["size"] == 768 << 20 == image.stat().st_size
    assert acquisition["sha256"] == hashlib.sha256(image.read_bytes()).hexdigest()
    assert image.stat().st_mode & 0o777 == 0o600
    assert vm.qmp("query-status")["status"] == "running"  # resumed
    again = vm.vigil("vmi", "acquire", found["uuid"], str(image))
    assert again.returncode == 2 and "never overwritten" in again.stderr
    after = _guest_ps(vm)
    started = time.monotonic()
    out = vm.vigil("vmi", "analyze", str(image), "--kernel", str(vm.kernel), "--format", "json")
    took = time.monotonic() - started
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    memory = {p["pid"]: p["name"] for p in result["processes"]}
    stable = {pid: comm for pid, comm in before.items() if after.get(pid) == comm}
    # Processes alive before and after the pause are in memory, with the same name (the
    # kernel's comm: 15 characters); ps and ssh started for the look itself may be missing.
    missing = {pid: comm for pid, comm in stable.items() if not _same_name(memory.get(pid), comm)}
    assert not missing, missing
    only_memory = {pid: name for pid, name in memory.items()
                   if pid not in before and pid not in after and pid != 0}
    assert len(only_memory) <= 5, only_memory  # what ran in between (sshd, sh, ps)
    names = {p["name"] for p in result["processes"]}
    assert {"systemd", "sshd", "cron", "vigil"} <= names
    listening = {(s["process"], s["lport"]) for s in result["sockets"] if s["state"] == "LISTEN"}
    assert ("sshd", 22) in listening, listening
    assert {m["name"] for m in result["modules"]} >= {"virtio_blk", "virtio_net"}
    assert result["findings"] == [] or all(f["kind"] != "hidden_process" for f in result["findings"])
    # The live loop's fast path reads the same processes and sockets from the same memory.
    # (A process caught being forked by the pause may be read by one and skipped by the other
    # as half-made: those must be few and must not be among the stable ones.)
    fast_procs, fast_socks, took_fast = _fast_scan(image, result["kernel"])
    fast_set = {(p["pid"], p["ppid"], p["name"], p["uid"], p["euid"]) for p in fast_procs}
    vol_set = {(p["pid"], p["ppid"], p["name"], p["uid"], p["euid"]) for p in result["processes"]}
    differ = fast_set ^ vol_set
    assert len(differ) <= 2 and not {d[0] for d in differ} & set(stable), differ
    keys = ("pid", "fd", "proto", "laddr", "lport", "raddr", "rport", "state")
    assert {tuple(s[k] for k in keys) for s in fast_socks if s["pid"] in stable} == \
        {tuple(s[k] for k in keys) for s in result["sockets"] if s["pid"] in stable}
    report(f"vmi: acquired 768 MiB of {vm.state.vms[0].name} with SHA-256 in "
           f"{acquisition['seconds']} s (paused {acquisition['paused_s']} s)")
    report(f"vmi ({vm.state.vms[0].kernel} kernel): {len(memory)} processes in memory = the "
           f"guest's ps ({len(stable)} stable); "
           f"`vigil vmi analyze` of a {image.stat().st_size >> 20} MiB image in {took:.1f} s "
           f"({', '.join(f'{k} {v} s' for k, v in result['timings_s'].items())}); the fast "
           f"path read the same {len(fast_procs)} processes and {len(fast_socks)} sockets in "
           f"{took_fast * 1000:.1f} ms")


def _fast_scan(image: Path, kernel: dict[str, Any]) -> tuple[list[dict[str, Any]],
                                                           list[dict[str, Any]], float]:
    """Processes and sockets by the fast path, where Volatility located the kernel."""
    isf = load_isf(kernel["isf"])
    memory = GuestMemory(image)
    try:
        scan = FastScan(memory, isf, KernelLocation(kernel["dtb"], kernel["virtual_offset"]))
        scan.processes()  # warm: page-table walks cached per scan, the ISF's offsets resolved
        started = time.perf_counter()
        tasks = scan.tasks()
        procs = [scan.process(t) for t in tasks]
        socks = scan.sockets(tasks)
        return procs, socks, time.perf_counter() - started
    finally:
        memory.close()
