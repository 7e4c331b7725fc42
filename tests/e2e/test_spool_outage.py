"""Stop the real server while the sensor keeps collecting; restart it: every event arrives once.

The outage lasts VIGIL_SPOOL_OUTAGE_S seconds (default 600, the ten minutes of the issue;
set it lower for a quick local run). During it a real sshd logs real failed logins.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import running_server
from tests.harness.figures import report
from tests.harness.procs import VIGIL, http, spawn, stop, wait_until
from tests.harness.sshd import Sshd, have_sshd

OUTAGE = float(os.environ.get("VIGIL_SPOOL_OUTAGE_S", "600"))

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not have_sshd(), reason="needs root, sshd and sshpass")]


def _events(srv: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    cursor = None
    while True:
        url = f"{srv.url}/api/v1/events?kind=ssh_login_failed&limit=1000"
        status, page = http("GET", url + (f"&cursor={cursor}" if cursor else ""),
                            token=srv.admin_token)
        assert status == 200, page
        rows += page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            return rows


def test_outage_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    sshd = Sshd(tmp_path / "sshd").start()
    sensor = None
    try:
        with running_server(tmp_path / "server") as srv:
            enroll = srv.vigil("token", "enroll", "--tenant", "default")
            sensor = spawn([VIGIL, "sensor", "guest", "--no-decoys", "--server", srv.url, "--enroll-token",
                            enroll, "--state-dir", str(tmp_path / "state"), "--log",
                            str(sshd.log), "--heartbeat-interval", "1"],
                           log=tmp_path / "sensor.log")
            sshd.failed_password("before-outage")
            wait_until(lambda: any(e["username"] == "before-outage" for e in _events(srv)),
                       timeout=30, what="the first event")

            srv.stop()
            t_down = time.monotonic()
            users = []
            attempts = max(5, min(30, int(OUTAGE // 10)))
            marker = subprocess.Popen(["sleep", "7777.5"])  # a process born during the outage
            for i in range(attempts):
                user = f"outage-{i}"
                sshd.failed_password(user)
                users.append(user)
                pause = t_down + OUTAGE * (i + 1) / attempts - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
            assert sensor.poll() is None, "the sensor must keep running while the server is down"
            spooled = list((tmp_path / "state").glob("*spool*"))
            assert spooled, "the sensor keeps a spool file in its state dir"
            outage = time.monotonic() - t_down
            srv.start()
            t_up = time.monotonic()

            def all_arrived() -> list[dict[str, Any]]:
                events = _events(srv)
                names = {e["username"] for e in events}
                return events if set(users) <= names else []

            events = wait_until(all_arrived, timeout=120, interval=1, what="the spooled events")
            delivered = time.monotonic() - t_up
            per_user = Counter(e["username"] for e in events)
            assert all(per_user[u] == 1 for u in [*users, "before-outage"]), per_user
            assert len({e["uuid"] for e in events}) == len(events)
            # inventory collected during the outage arrived too
            vm = http("GET", f"{srv.url}/api/v1/vms", token=srv.admin_token)[1]["items"][0]
            assert any(r["data"]["pid"] == marker.pid for r in _history(srv, vm["id"]))
            marker.kill()
            marker.wait()
            # and nothing more comes later: the spool was drained, not replayed
            time.sleep(5)
            again = Counter(e["username"] for e in _events(srv))
            assert again == per_user
            report(f"spool: outage {outage:.0f} s, {len(users)} failed logins during it, all delivered "
                  f"once {delivered:.1f} s after the restart")
    finally:
        stop(sensor)
        sshd.stop()


def _history(srv: Any, vm_id: int) -> Iterator[dict[str, Any]]:
    """Every process version the server keeps for the VM, page by page (a busy machine makes
    thousands during a long outage)."""
    cursor = ""
    while True:
        page = http("GET", f"{srv.url}/api/v1/vms/{vm_id}/processes?history=true&limit=1000"
                    + (f"&cursor={cursor}" if cursor else ""), token=srv.admin_token)[1]
        yield from page["items"]
        cursor = page.get("next_cursor") or ""
        if not cursor:
            return
