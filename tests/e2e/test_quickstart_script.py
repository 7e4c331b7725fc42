"""The scripted path of the README / issue, run literally with bash, port 8740 and all."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from tests.harness.procs import VENV_BIN

SCRIPT = r"""
set -euo pipefail
export VIGIL_HOME=$(mktemp -d)              # data dir; default ./vigil-data
echo "$VIGIL_HOME" > vigil_home.txt
vigil init --admin-email admin@example.org --admin-password-file pw.txt
vigil server --host 127.0.0.1 --port 8740 &
echo $! > server.pid
ENROLL=$(vigil token enroll --tenant default)           # prints the token alone
API=$(vigil token api --user admin@example.org)         # prints the token alone
vigil sensor guest --server http://127.0.0.1:8740 --enroll-token "$ENROLL" \
      --state-dir "$STATE_DIR" --log "$AUTH_LOG" &          # --log: extra auth/security log files to follow
echo $! > sensor.pid
echo "$API" > api.txt
for i in $(seq 1 100); do
  curl -fsS http://127.0.0.1:8740/api/v1/health >/dev/null 2>&1 && break; sleep 0.2
done
curl -H "Authorization: Bearer $API" http://127.0.0.1:8740/api/v1/vms
"""


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_scripted_path_works_as_written(tmp_path: Path) -> None:
    if not _port_free(8740):
        pytest.fail("port 8740 is busy: the scripted path needs it")
    (tmp_path / "pw.txt").write_text("a-strong-password\n")
    (tmp_path / "auth.log").touch()
    env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}",
           "STATE_DIR": str(tmp_path / "s1"), "AUTH_LOG": str(tmp_path / "auth.log")}
    env.pop("VIGIL_HOME", None)
    pids: list[int] = []
    try:
        # output to files, not pipes: the background server and sensor keep their copies open
        with open(tmp_path / "out.txt", "w") as out_f, open(tmp_path / "err.txt", "w") as err_f:
            proc = subprocess.Popen(["bash", "-c", SCRIPT], cwd=tmp_path, env=env, stdout=out_f,
                                    stderr=err_f)
            try:
                rc = proc.wait(timeout=120)
            finally:
                pids += [int((tmp_path / f).read_text()) for f in ("server.pid", "sensor.pid")
                         if (tmp_path / f).exists()]
        stdout, stderr = (tmp_path / "out.txt").read_text(), (tmp_path / "err.txt").read_text()
        assert rc == 0, stderr
        body = json.loads(stdout.strip().splitlines()[-1])
        assert "items" in body
        api = (tmp_path / "api.txt").read_text().strip()
        assert api.startswith("vgu_")
        deadline = time.monotonic() + 30
        vms: list[dict] = []
        while time.monotonic() < deadline and not vms:
            got = subprocess.run(["curl", "-fsS", "-H", f"Authorization: Bearer {api}",
                                  "http://127.0.0.1:8740/api/v1/vms"], capture_output=True,
                                 text=True)
            vms = json.loads(got.stdout)["items"] if got.returncode == 0 else []
            time.sleep(0.5)
        assert vms and vms[0]["name"] == socket.gethostname()
        home = Path((tmp_path / "vigil_home.txt").read_text().strip())
        assert (home / "secret.key").stat().st_mode & 0o077 == 0
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for pid in pids:
            for _ in range(100):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
            else:
                os.kill(pid, signal.SIGKILL)
        home_file = tmp_path / "vigil_home.txt"
        if home_file.exists():
            subprocess.run(["rm", "-rf", home_file.read_text().strip()])
