"""A victim account on this machine: a real user with a weak password, removed afterwards."""

from __future__ import annotations

import os
import pwd
import subprocess
import time
from pathlib import Path

WORDLIST = ["123456", "password", "admin", "letmein", "qwerty", "dragon", "monkey", "sunshine"]
WEAK_PASSWORD = "sunshine"


class Victim:
    def __init__(self, tag: str) -> None:
        self.name = f"vigilv{tag}"[:31]
        self.password = WEAK_PASSWORD
        self.home = Path("/home") / self.name

    def __enter__(self) -> Victim:
        subprocess.run(["useradd", "-m", "-s", "/bin/bash", self.name], check=True,
                       capture_output=True)
        subprocess.run(["chpasswd"], input=f"{self.name}:{self.password}\n", text=True,
                       check=True, capture_output=True)
        return self

    @property
    def uid(self) -> int:
        return pwd.getpwnam(self.name).pw_uid

    def write(self, relative: str, text: str, mode: int = 0o600) -> Path:
        """A file in the victim's home, owned by the victim."""
        path = self.home / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        os.chown(path.parent, self.uid, self.uid)
        path.write_text(text)
        path.chmod(mode)
        os.chown(path, self.uid, self.uid)
        return path

    def __exit__(self, *exc: object) -> None:
        for _ in range(20):  # until none is left (a dying shell may still fork)
            for by in ("-u", "-U"):  # effective and real: a setuid process is the victim's too
                subprocess.run(["pkill", "-KILL", by, self.name], capture_output=True)
            time.sleep(0.1)
            if all(subprocess.run(["pgrep", by, self.name], capture_output=True).returncode
                   for by in ("-u", "-U")):
                break
        subprocess.run(["userdel", "-r", "-f", self.name], capture_output=True)
