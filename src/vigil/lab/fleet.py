"""``vigil lab up``, ``down`` and ``status``: the lab's VMs, registered with a Vigil server.

The run state (pids, ports, sockets, the server and its API token) is one JSON file, mode 0600,
in the run directory (``~/.cache/vigil/lab/run``, or ``VIGIL_LAB_RUN`` / ``--run-dir``).
"""

from __future__ import annotations

import json
import os
import re
import socket
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vigil.lab import qemu
from vigil.lab.image import Builder, Image, LabError, Recipe, cache_dir, configured_mirror

STATE_FILE = "lab.json"
#: user-mode networking: the address at which a guest reaches the host's loopback
GUEST_HOST_ADDRESS = "10.0.2.2"
#: serial-console lines that tell how far a boot has come
MILESTONES = (
    ("Linux version", "kernel started"),
    ("Run /init", "initramfs"),
    ("systemd[1]: Detected virtualization", "systemd started"),
    ("Welcome to", "systemd started"),
    ("Started ssh.service", "sshd up"),
    ("Started vigil-sensor-guest.service", "sensor started"),
)


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def run_dir(path: str | Path | None = None) -> Path:
    return Path(path or os.environ.get("VIGIL_LAB_RUN") or cache_dir() / "run")


@dataclass
class LabVM:
    name: str
    vm_id: int
    smbios_uuid: str
    ssh_port: int
    pid: int
    accel: str
    memory_mib: int
    marker: str
    qmp_socket: str
    serial_log: str
    ram_file: str
    started_at: float
    online_after: float | None = None
    kernel: str = "cloud"


@dataclass
class LabState:
    server: str
    api_token: str
    tenant: str
    host_id: int
    image: str
    vms: list[LabVM] = field(default_factory=list)
    #: what the attacker learnt, per VM name (the guessed password)
    loot: dict[str, dict[str, str]] = field(default_factory=dict)

    @classmethod
    def load(cls, directory: Path) -> LabState | None:
        path = directory / STATE_FILE
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        data["vms"] = [LabVM(**vm) for vm in data.get("vms", [])]
        return cls(**data)

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = directory / STATE_FILE
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # holds the API token
        with os.fdopen(fd, "w") as out:
            json.dump(asdict(self), out, indent=2)
        tmp.replace(path)

    def vm(self, name: str) -> LabVM:
        for vm in self.vms:
            if vm.name == name:
                return vm
        names = ", ".join(v.name for v in self.vms) or "none"
        raise LabError(f"no lab VM named {name!r} (running: {names})")


class Api:
    """The few calls of Vigil's REST API the lab needs (standard library only)."""

    def __init__(self, server: str, token: str) -> None:
        if urllib.parse.urlsplit(server).scheme not in ("http", "https"):
            raise LabError(f"--server must be an http:// or https:// URL, not {server!r}")
        self.server = server.rstrip("/")
        self.token = token

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(  # noqa: S310  (the scheme is checked above)
            f"{self.server}/api/v1{path}", data=data, method=method,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=15) as resp:  # noqa: S310  (http/https only)
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:300]
            raise LabError(f"server refused {method} {path}: {exc.code} {detail}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise LabError(f"cannot reach the Vigil server at {self.server}: {exc}") from exc

    def items(self, path: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        cursor = None
        while True:
            sep = "&" if "?" in path else "?"
            page = self.call("GET", f"{path}{sep}limit=1000"
                             + (f"&cursor={urllib.parse.quote(cursor)}" if cursor else ""))
            out.extend(page["items"])
            cursor = page.get("next_cursor")
            if not cursor:
                return out


def guest_server_url(server: str) -> str:
    """The server's URL as a guest sees it: the host's loopback is 10.0.2.2 under user-mode
    networking; other addresses are reached as they are."""
    parts = urllib.parse.urlsplit(server)
    host = parts.hostname or ""
    if host in ("localhost", "::1") or host.startswith("127."):
        netloc = GUEST_HOST_ADDRESS + (f":{parts.port}" if parts.port else "")
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc)).rstrip("/")
    return server.rstrip("/")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Location:
    site: str = "Vigil lab"
    country: str = "DE"
    latitude: float = 50.11
    longitude: float = 8.68


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def up(*, server: str, api_token: str, vms: int = 1, tenant: str = "default",
       memory_mib: int = 768, accel: str = "auto", directory: Path | None = None,
       location: Location | None = None, timeout: float = 180.0,
       image: Image | None = None, kernel: str = "cloud") -> LabState:
    """Build (cached) the image, register the host and VMs, boot them and wait until each
    guest sensor is online. Returns the saved run state."""
    directory = run_dir(directory)
    old = LabState.load(directory)
    running = qemu.running_in(directory) if directory.exists() else {}
    if running or (old is not None and any(qemu.is_ours(v.pid, v.marker) for v in old.vms)):
        names = sorted(set(running.values()) | {v.name for v in (old.vms if old else [])})
        raise LabError(f"the lab is already up ({', '.join(names)}); "
                       "`vigil lab down` first, or give another --run-dir")
    if vms < 1:
        raise LabError("--vms must be at least 1")
    api = Api(server, api_token)
    api.call("GET", "/hosts?limit=1")  # fails early on a wrong URL or token
    image = image or Builder(Recipe(configured_mirror())).build()
    image.boot_files(kernel)  # an unknown kernel flavour fails here
    if accel == "auto":
        _say(">> probing KVM (a hang in early boot means nested KVM does not work here)")
        accel = qemu.probe_accel(image)
    _say(f">> accelerator: {accel}" + ("" if accel == "kvm" else " (software emulation)"))
    location = location or Location()
    host = _host(api, tenant, location)
    state = LabState(server=server, api_token=api_token, tenant=tenant, host_id=host["id"],
                     image=str(image.path), loot=old.loot if old else {})
    known = {v["name"]: v for v in api.items(f"/vms?host_id={host['id']}")}
    guest_url = guest_server_url(server)
    for n in range(1, vms + 1):
        name = f"lab-vm{n}"
        record = known.get(name)
        if record is None or not record.get("smbios_uuid"):
            record = api.call("POST", "/vms", {"name": name, "tenant": tenant,
                                               "host_id": host["id"],
                                               "smbios_uuid": qemu.new_uuid()})
        token = api.call("POST", "/enrollment-tokens", {"tenant": tenant, "ttl_hours": 1})["token"]
        uuid = str(record["smbios_uuid"])
        append = " ".join([
            "console=ttyS0", "root=/dev/vda", "rw", "panic=10", f"systemd.hostname={name}",
            f"systemd.machine_id={uuid.replace('-', '')}",
            f"vigil.server={guest_url}", f"vigil.enroll={token}",
        ])
        spec = qemu.VMSpec(name=name, smbios_uuid=uuid, memory_mib=memory_mib,
                           ssh_port=free_port(), run_dir=directory, image=image, append=append,
                           accel=accel, kernel=kernel)
        _say(f">> booting {name} (VM {record['id']}, {kernel} kernel, SSH on "
             f"127.0.0.1:{spec.ssh_port}, {memory_mib} MiB)")
        pid = qemu.start(spec)
        state.vms.append(LabVM(
            name=name, vm_id=int(record["id"]), smbios_uuid=uuid, ssh_port=spec.ssh_port,
            pid=pid, accel=accel, memory_mib=memory_mib, marker=f"vigil-lab-{name}",
            qmp_socket=str(spec.qmp_socket), serial_log=str(spec.serial_log),
            ram_file=str(spec.ram_file), started_at=time.time(), kernel=kernel))
        state.save(directory)
    _wait_online(api, state, timeout)
    state.save(directory)
    return state


def _host(api: Api, tenant: str, location: Location) -> dict[str, Any]:
    name = f"lab-{socket.gethostname()}"
    for host in api.items("/hosts"):
        if host["name"] == name:
            return host
    return dict(api.call("POST", "/hosts", {"name": name, "tenant": tenant, **asdict(location)}))


def _wait_online(api: Api, state: LabState, timeout: float) -> None:
    """Wait for every VM's guest sensor to be online, showing how far each boot has come."""
    deadline = time.monotonic() + timeout
    shown: dict[str, str] = {}
    pending = {vm.name: vm for vm in state.vms}
    while pending:
        for name, vm in list(pending.items()):
            if not qemu.is_ours(vm.pid, vm.marker):
                raise LabError(f"QEMU for {name} died; see {vm.serial_log} and "
                               f"{Path(vm.serial_log).with_name(name + '.qemu.log')}")
            stage = _stage(Path(vm.serial_log))
            if stage and shown.get(name) != stage:
                shown[name] = stage
                _say(f"   {name}: {stage} ({time.time() - vm.started_at:.0f} s)")
            if vm.online_after is None and \
                    api.call("GET", f"/vms/{vm.vm_id}").get("status") == "online":
                vm.online_after = round(time.time() - vm.started_at, 1)
                _say(f"   {name}: guest sensor online {vm.online_after:.1f} s after boot")
            if vm.online_after is not None and ssh_ready(vm.ssh_port):
                _say(f"   {name}: sshd answering on 127.0.0.1:{vm.ssh_port} "
                     f"({time.time() - vm.started_at:.0f} s)")
                del pending[name]
        if pending and time.monotonic() > deadline:
            raise LabError(f"{', '.join(pending)} not online after {timeout:.0f} s; "
                           f"see the serial logs in {Path(state.vms[0].serial_log).parent}")
        time.sleep(0.5)


def ssh_ready(port: int) -> bool:
    """Whether the guest's sshd sends its banner through the forwarded port (QEMU accepts the
    connection itself, and drops it when nothing listens inside yet)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
            return conn.recv(8).startswith(b"SSH-")
    except OSError:
        return False


def _stage(serial_log: Path) -> str | None:
    try:
        text = ANSI.sub("", serial_log.read_text(errors="replace"))
    except OSError:
        return None
    reached = None
    for needle, stage in MILESTONES:
        if needle in text:
            reached = stage
    return reached


def down(directory: Path | None = None) -> list[tuple[str, str]]:
    """Stop every VM the lab started (power-down, then by pid) and remove their RAM files."""
    directory = run_dir(directory)
    state = LabState.load(directory)
    vms = list(state.vms) if state else []
    known = {vm.pid for vm in vms}
    strays = {pid: name for pid, name in (qemu.running_in(directory).items()
                                          if directory.exists() else []) if pid not in known}
    results: dict[str, str] = {}

    def stop(name: str, pid: int, marker: str, socket: Path, ram: Path | None) -> None:
        results[name] = qemu.stop(pid, marker, socket)
        if ram is not None:
            ram.unlink(missing_ok=True)
        socket.unlink(missing_ok=True)

    jobs: list[tuple[str, int, str, Path, Path | None]] = [
        (vm.name, vm.pid, vm.marker, Path(vm.qmp_socket), Path(vm.ram_file)) for vm in vms]
    jobs += [(f"{name} (pid {pid}, not in the run state)", pid, f"vigil-lab-{name}",
              directory / f"{name}.qmp", None) for pid, name in strays.items()]
    threads = [threading.Thread(target=stop, args=job) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if state is not None:
        state.vms = []
        state.save(directory)
    return sorted(results.items())


def status(directory: Path | None = None) -> list[dict[str, Any]]:
    """Each VM: its process, QEMU's run state over QMP and the server's view of its sensor."""
    state = LabState.load(run_dir(directory))
    if state is None:
        return []
    api = Api(state.server, state.api_token)
    rows = []
    for vm in state.vms:
        alive = qemu.is_ours(vm.pid, vm.marker)
        row: dict[str, Any] = {"name": vm.name, "vm_id": vm.vm_id, "pid": vm.pid,
                               "accel": vm.accel, "kernel": vm.kernel,
                               "ssh": f"127.0.0.1:{vm.ssh_port}",
                               "qemu": "running" if alive else "gone",
                               "uptime_s": round(time.time() - vm.started_at) if alive else None,
                               "online_after_s": vm.online_after}
        if alive:
            try:
                row["qemu"] = qemu.qmp(Path(vm.qmp_socket), "query-status")["status"]
            except Exception as exc:  # noqa: BLE001  (shown, not fatal)
                row["qemu"] = f"no QMP ({exc.__class__.__name__})"
        try:
            row["sensor"] = api.call("GET", f"/vms/{vm.vm_id}").get("status")
            alerts = api.call("GET", f"/alerts?vm_id={vm.vm_id}&limit=1000")["items"]
            row["alerts"] = len(alerts)
            row["incidents"] = sorted({a["incident_id"] for a in alerts if a.get("incident_id")})
        except LabError:
            row["sensor"] = "server unreachable"
        rows.append(row)
    return rows
