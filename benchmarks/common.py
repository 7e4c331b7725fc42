"""Shared pieces of the benchmarks: a real `vigil server` process, payloads, statistics."""

from __future__ import annotations

import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.harness.pgcluster import PgCluster, free_port  # noqa: E402
from tests.harness.procs import VIGIL, spawn, stop, wait_http  # noqa: E402


@contextmanager
def database(kind: str) -> Iterator[str | None]:
    """None (SQLite under the server's home) or the URL of a throwaway PostgreSQL."""
    if kind == "sqlite":
        yield None
        return
    with PgCluster() as pg:
        yield pg.url


@contextmanager
def server(db_url: str | None, *, extra_env: dict[str, str] | None = None,
           workers: int = 1) -> Iterator[dict[str, Any]]:
    """A real `vigil server` (one uvicorn process), initialised, with an admin API token."""
    with tempfile.TemporaryDirectory(prefix="vigil-bench-") as tmp:
        home = Path(tmp) / "home"
        env = {"VIGIL_HOME": str(home), **(extra_env or {})}
        if db_url:
            env["VIGIL_DATABASE_URL"] = db_url
        pw = Path(tmp) / "pw"
        pw.write_text("bench-password-1\n")
        full_env = {**os.environ, **env}
        subprocess.run([VIGIL, "init", "--admin-email", "bench@example.org",
                        "--admin-password-file", str(pw)], env=full_env, check=True,
                       capture_output=True)
        port = free_port()
        proc = spawn([VIGIL, "server", "--port", str(port), "--workers", str(workers)], env=env,
                     log=Path(tmp) / "log")
        try:
            wait_http(f"http://127.0.0.1:{port}/api/v1/health")
            yield {"port": port, "home": home, "env": full_env, "pid": proc.pid,
                   "db_url": db_url or f"sqlite:///{home / 'vigil.db'}"}
        finally:
            stop(proc)


def vigil_cli(env: dict[str, str], *args: str) -> str:
    return subprocess.run([VIGIL, *args], env=env, check=True, capture_output=True,
                          text=True).stdout.strip()


def enroll(port: int, token: str, hostname: str, machine_id: str | None = None) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    body = {"enroll_token": token, "kind": "guest", "hostname": hostname}
    if machine_id:
        body["machine_id"] = machine_id
    conn.request("POST", "/api/v1/sensors/enroll", json.dumps(body),
                 {"Content-Type": "application/json"})
    resp = conn.getresponse()
    data = json.loads(resp.read())
    assert resp.status == 201, data
    return str(data["token"])


def now() -> str:
    return datetime.now(UTC).isoformat()


def auth_events(n: int) -> list[dict[str, Any]]:
    """Realistic security events: sshd failures and successes from many sources."""
    t = now()
    return [
        {"id": str(uuid.uuid4()), "kind": "ssh_login_failed" if i % 10 else "ssh_login_success",
         "observed_at": t, "source": "/var/log/auth.log", "src_ip": f"203.0.{i % 250}.{i % 200 + 1}",
         "user": f"user{i % 50}", "pid": 1000 + i % 30000,
         "message": f"Failed password for user{i % 50} from 203.0.{i % 250}.{i % 200 + 1} port "
                    f"{40000 + i % 20000} ssh2", "data": {"port": 40000 + i % 20000}}
        for i in range(n)
    ]


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def median(values: list[float]) -> float:
    return statistics.median(values)
