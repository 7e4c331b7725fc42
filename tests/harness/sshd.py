"""A real OpenSSH server on a loopback port, logging to a file the guest sensor follows."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from tests.harness.pgcluster import free_port
from tests.harness.procs import spawn, stop, wait_until

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
SSH_OPTS = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "BatchMode=no", "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR"]


class Sshd:
    def __init__(self, workdir: Path, *, listen: tuple[str, ...] = ("127.0.0.1",)) -> None:
        self.listen = listen
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.log = self.dir / "sshd.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Sshd:
        if not Path(SSHD).exists():
            raise RuntimeError("OpenSSH server not installed: `make test` installs it")
        for name in ("hostkey", "userkey"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                            str(self.dir / name)], check=True)
        shutil.copy(self.dir / "userkey.pub", self.dir / "authorized_keys")
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        (self.dir / "sshd_config").write_text(
            f"Port {self.port}\n"
            + "".join(f"ListenAddress {address}\n" for address in self.listen)
            + f"HostKey {self.dir / 'hostkey'}\n"
            f"PidFile {self.dir / 'sshd.pid'}\nAuthorizedKeysFile {self.dir / 'authorized_keys'}\n"
            "StrictModes no\nUsePAM no\nPasswordAuthentication yes\n"
            "PermitRootLogin prohibit-password\nLogLevel INFO\nMaxStartups 100\n"
        )
        self.log.touch()
        self.proc = spawn([SSHD, "-D", "-f", str(self.dir / "sshd_config"), "-E", str(self.log)])
        wait_until(lambda: "Server listening" in self.log.read_text(), timeout=10,
                   what="sshd to listen")
        return self

    def failed_password(self, user: str, password: str = "wrong-password") -> None:
        """A real password login that fails (sshd logs it)."""
        subprocess.run(["sshpass", "-p", password, "ssh", *SSH_OPTS, "-o",
                        "PreferredAuthentications=password", "-o", "NumberOfPasswordPrompts=1",
                        "-p", str(self.port), f"{user}@127.0.0.1", "true"],
                       capture_output=True, timeout=30)

    def key_login(self, user: str = "root", command: str = "true") -> str:
        out = subprocess.run(["ssh", *SSH_OPTS, "-i", str(self.dir / "userkey"), "-o",
                              "PreferredAuthentications=publickey", "-p", str(self.port),
                              f"{user}@127.0.0.1", command], capture_output=True, text=True,
                             timeout=30)
        return out.stdout

    def stop(self) -> None:
        stop(self.proc)


def have_sshd() -> bool:
    return Path(SSHD).exists() and shutil.which("sshpass") is not None and os.geteuid() == 0


def settle(seconds: float = 0.2) -> None:
    time.sleep(seconds)
