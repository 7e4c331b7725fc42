"""A throwaway PostgreSQL cluster on a loopback port, from Debian's packages.

No system service is assumed: ``initdb`` into a temporary directory, ``postgres`` started
by pid on 127.0.0.1, stopped and removed afterwards.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def pg_bindir() -> Path | None:
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(candidate, "postgres").exists():
            return Path(candidate)
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgCluster:
    def __init__(self) -> None:
        bindir = pg_bindir()
        if bindir is None:
            raise RuntimeError("PostgreSQL is not installed: `make test` installs it (as root)")
        self.bindir = bindir
        self.dir = Path(tempfile.mkdtemp(prefix="vigil-pg-"))
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._user: str | None = None
        if os.geteuid() == 0:  # postgres refuses to run as root
            self._user = "postgres"
            uid = pwd.getpwnam("postgres").pw_uid
            os.chown(self.dir, uid, -1)

    def _cmd(self, *args: str) -> list[str]:
        if self._user:
            return ["runuser", "-u", self._user, "--", *args]
        return list(args)

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://vigil@127.0.0.1:{self.port}/vigil"

    def start(self) -> PgCluster:
        data = self.dir / "data"
        subprocess.run(self._cmd(str(self.bindir / "initdb"), "-D", str(data), "-U", "vigil",
                                 "--auth=trust", "-E", "UTF8", "--no-sync"),
                       check=True, capture_output=True)
        self.proc = subprocess.Popen(
            self._cmd(str(self.bindir / "postgres"), "-D", str(data), "-p", str(self.port),
                      "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.dir}",
                      "-c", "fsync=off", "-c", "synchronous_commit=off",
                      "-c", "full_page_writes=off", "-c", "max_connections=200"),
            stdout=subprocess.DEVNULL, stderr=open(self.dir / "postgres.log", "wb"),  # noqa: SIM115
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("postgres exited: " + (self.dir / "postgres.log").read_text())
            probe = subprocess.run(
                self._cmd(str(self.bindir / "psql"), "-h", "127.0.0.1", "-p", str(self.port),
                          "-U", "vigil", "-d", "postgres", "-c",
                          "SELECT 1"), capture_output=True)
            if probe.returncode == 0:
                break
            time.sleep(0.2)
        else:
            raise RuntimeError("postgres did not start within 30 s")
        self.createdb("vigil")
        return self

    def createdb(self, name: str) -> str:
        subprocess.run(self._cmd(str(self.bindir / "createdb"), "-h", "127.0.0.1", "-p",
                                 str(self.port), "-U", "vigil", name), check=True,
                       capture_output=True)
        return f"postgresql+psycopg://vigil@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)  # "fast" shutdown
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> PgCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
