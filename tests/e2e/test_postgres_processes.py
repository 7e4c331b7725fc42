"""Real processes on PostgreSQL: two stateless `vigil server` workers share one database.

A real guest sensor enrolls, reports and answers a live query through them, as it does on
SQLite; the audit chain stays intact with both processes appending to it.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import running_server
from tests.harness.procs import VIGIL, http, spawn, stop, wait_until


def test_two_workers_on_postgresql(tmp_path: Path, pg_cluster: Any) -> None:
    if pg_cluster is None:
        pytest.skip("PostgreSQL not installed")
    url = pg_cluster.createdb(f"procs_{os.getpid()}")
    with running_server(tmp_path / "server", database_url=url, workers=2) as srv:
        enroll = srv.vigil("token", "enroll", "--tenant", "default")
        sensor = spawn([VIGIL, "sensor", "guest", "--no-decoys", "--server", srv.url,
                        "--enroll-token", enroll,
                        "--state-dir", str(tmp_path / "state"), "--heartbeat-interval", "1"],
                       log=tmp_path / "sensor.log")
        proc = subprocess.Popen(["sleep", "5151.5"])
        try:
            def get(path: str) -> Any:
                status, body = http("GET", srv.url + path, token=srv.admin_token)
                assert status == 200, body
                return body

            vm = wait_until(lambda: [v for v in get("/api/v1/vms")["items"]
                                     if v["status"] == "online"], timeout=30, what="VM")[0]
            wait_until(lambda: [r for r in get(f"/api/v1/vms/{vm['id']}/processes?limit=1000")
                                ["items"] if r["data"]["pid"] == proc.pid],
                       timeout=30, what="the sleep process")
            status, task = http("POST", f"{srv.url}/api/v1/vms/{vm['id']}/live-query",
                                token=srv.admin_token)
            assert status == 202
            done = wait_until(lambda: (t := get(f"/api/v1/tasks/{task['id']}"))["status"] == "done"
                              and t, timeout=30, what="the live query")
            assert proc.pid in {p["pid"] for p in done["result"]["processes"]}
            assert get("/api/v1/health")["database"] == "postgresql"
        finally:
            proc.kill()
            proc.wait()
            stop(sensor)
        out = subprocess.run([VIGIL, "audit", "verify"], env={**os.environ, **srv.env},
                             capture_output=True, text=True)
        assert out.returncode == 0 and "intact" in out.stdout, out.stdout + out.stderr


def test_two_workers_count_one_window(tmp_path: Path, pg_cluster: Any) -> None:
    """Failed logins posted concurrently through both workers add up to one alert."""
    if pg_cluster is None:
        pytest.skip("PostgreSQL not installed")
    import threading
    import uuid
    from datetime import UTC, datetime

    url = pg_cluster.createdb(f"window_{os.getpid()}")
    with running_server(tmp_path / "server", database_url=url, workers=2) as srv:
        enroll = srv.vigil("token", "enroll", "--tenant", "default")
        status, answer = http("POST", srv.url + "/api/v1/sensors/enroll", body={
            "enroll_token": enroll, "kind": "guest", "hostname": "web-1"})
        assert status == 201, answer

        def fail(i: int) -> None:
            event = {"id": str(uuid.uuid4()), "kind": "ssh_login_failed",
                     "observed_at": datetime.now(UTC).isoformat(), "src_ip": "203.0.113.50",
                     "user": f"user{i}", "message": "Failed password"}
            body = {"batch_id": str(uuid.uuid4()), "sent_at": datetime.now(UTC).isoformat(),
                    "events": [event]}
            code, _ = http("POST", srv.url + "/api/v1/sensors/ingest", token=answer["token"],
                           body=body)
            assert code == 200

        threads = [threading.Thread(target=fail, args=(i,)) for i in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        status, body = http("GET", srv.url + "/api/v1/alerts?limit=100", token=srv.admin_token)
        rules = sorted(a["rule_id"] for a in body["items"])
        assert rules == ["ssh-password-guessing", "ssh-password-spraying"], rules
        guess = next(a for a in body["items"] if a["rule_id"] == "ssh-password-guessing")
        assert guess["evidence"]["failures"] == 5  # the fifth of twelve, counted once each
