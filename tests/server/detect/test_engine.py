"""The engine through the real API on SQLite and PostgreSQL: alerts, dedup, state that
survives a restart, incidents, filters, the timeline, status changes and the watchdog."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from vigil.server.db.models import AuditRecord, RuleState


def _t(seconds_ago: float = 0) -> str:
    return (datetime.now(UTC) - timedelta(seconds=seconds_ago)).isoformat()


def _fail(i: int, src: str = "198.51.100.7", ago: float = 0, user: str = "root") -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "kind": "ssh_login_failed", "observed_at": _t(ago - i),
            "src_ip": src, "user": user, "message": f"Failed password for {user} from {src}"}


def _batch(events: list[dict[str, Any]], snapshots: list[dict[str, Any]] | None = None) -> dict:
    return {"batch_id": str(uuid.uuid4()), "sent_at": _t(), "events": events,
            "snapshots": snapshots or []}


def _ingest(client: Any, world: Any, body: dict, tenant: str = "acme") -> None:
    r = client.post("/api/v1/sensors/ingest", json=body, headers=world.sh(tenant))
    assert r.status_code == 200, r.text


def _alerts(client: Any, world: Any, tenant: str = "acme", **params: Any) -> list[dict]:
    r = client.get("/api/v1/alerts", params=params, headers=world.h(tenant))
    assert r.status_code == 200, r.text
    return r.json()["items"]


def test_brute_force_then_login_makes_one_incident(client: Any, world: Any) -> None:
    fails = [_fail(i, ago=60) for i in range(6)]
    login = {"id": str(uuid.uuid4()), "kind": "ssh_login_success", "observed_at": _t(50),
             "src_ip": "198.51.100.7", "user": "root", "message": "Accepted password for root"}
    body = _batch([*fails, login])
    _ingest(client, world, body)
    _ingest(client, world, body)  # re-sent: stored once, counted once, alerted once
    alerts = _alerts(client, world)
    assert sorted(a["rule_id"] for a in alerts) == ["ssh-login-after-failures", "ssh-password-guessing"]
    login_alert = next(a for a in alerts if a["rule_id"] == "ssh-login-after-failures")
    assert login_alert["severity"] == "high" and login_alert["techniques"] == ["T1078"]
    assert login_alert["src_ip"] == "198.51.100.7" and login_alert["evidence"]["failures_before"] == 6
    assert login_alert["detected_at"] >= login_alert["observed_at"]
    assert _alerts(client, world, "globex") == []  # the other tenant sees none of it
    incidents = client.get("/api/v1/incidents", headers=world.h("acme")).json()["items"]
    assert len(incidents) == 1
    inc = incidents[0]
    assert inc["alert_count"] == 2 and inc["severity"] == "high"
    assert inc["tactics"] == ["credential-access", "initial-access"]
    assert inc["sources"] == ["198.51.100.7"]
    detail = client.get(f"/api/v1/incidents/{inc['id']}", headers=world.h("acme")).json()
    kinds = [e["type"] for e in detail["timeline"]]
    assert kinds.count("alert") == 2 and kinds.count("event") == 7
    times = [e["at"] for e in detail["timeline"]]
    assert times == sorted(times)
    assert detail["vm_name"] == "vm-acme"


def test_filters(client: Any, world: Any) -> None:
    _ingest(client, world, _batch([_fail(i) for i in range(5)]))
    assert len(_alerts(client, world, technique="T1110")) == 1
    assert len(_alerts(client, world, technique="T1110.001")) == 1
    assert _alerts(client, world, technique="T1059") == []
    assert len(_alerts(client, world, severity="medium")) == 1
    assert _alerts(client, world, severity="critical") == []
    vm = world.sensors["acme"]["vm_id"]
    assert len(_alerts(client, world, vm_id=vm)) == 1
    assert _alerts(client, world, since=_t(-60)) == []
    assert len(_alerts(client, world, limit=1)) == 1
    r = client.get("/api/v1/alerts", params={"technique": "T1%"}, headers=world.h("acme"))
    assert r.status_code == 422
    r = client.get("/api/v1/alerts", params={"severity": "urgent"}, headers=world.h("acme"))
    assert r.status_code == 422
    csv = client.get("/api/v1/alerts", params={"format": "csv"}, headers=world.h("acme")).text
    assert "ssh-password-guessing" in csv.splitlines()[1]


def test_state_survives_a_restart(settings: Any, world: Any, client: Any) -> None:
    from fastapi.testclient import TestClient

    from vigil.server.app import create_app

    _ingest(client, world, _batch([_fail(i, ago=20) for i in range(3)]))
    assert _alerts(client, world) == []
    with world.db.read() as s:
        assert s.scalar(select(func.count()).select_from(RuleState)) >= 1
    second = create_app(settings)  # another server process on the same database
    try:
        with TestClient(second) as other:
            _ingest(other, world, _batch([_fail(i, ago=10) for i in range(2)]))
            assert [a["rule_id"] for a in _alerts(other, world)] == ["ssh-password-guessing"]
    finally:
        second.state.db.dispose()


def test_alerts_far_apart_are_separate_incidents(client: Any, world: Any) -> None:
    _ingest(client, world, _batch([_fail(i, src="192.0.2.1", ago=7200) for i in range(5)]))
    _ingest(client, world, _batch([_fail(i, src="192.0.2.2") for i in range(5)]))
    incidents = client.get("/api/v1/incidents", headers=world.h("acme")).json()["items"]
    assert len(incidents) == 2 and all(i["alert_count"] == 1 for i in incidents)


def test_rules_endpoint(client: Any, world: Any) -> None:
    rules = client.get("/api/v1/rules", headers=world.h("acme")).json()
    by_id = {r["id"]: r for r in rules}
    shell = by_id["reverse-shell"]
    assert shell["techniques"][0]["stix_id"] == "attack-pattern--a9d4b653-6915-42af-98b2-5758c4ceee56"
    assert shell["techniques"][0]["tactics"] == ["execution"] and "SI-4" in shell["controls"]
    assert "stdin" in shell["description"]


def test_status_changes_are_audited_and_role_checked(client: Any, world: Any) -> None:
    _ingest(client, world, _batch([_fail(i) for i in range(5)]))
    (alert,) = _alerts(client, world)
    r = client.patch(f"/api/v1/alerts/{alert['id']}", json={"status": "acknowledged"},
                     headers=world.h("acme"))
    assert r.status_code == 200 and r.json()["status"] == "acknowledged"
    r = client.patch(f"/api/v1/alerts/{alert['id']}", json={"status": "acknowledged"},
                     headers=world.h("globex"))
    assert r.status_code == 404
    r = client.patch(f"/api/v1/incidents/{alert['incident_id']}", json={"status": "nonsense"},
                     headers=world.h("acme"))
    assert r.status_code == 422
    r = client.patch(f"/api/v1/incidents/{alert['incident_id']}", json={"status": "closed"},
                     headers=world.h("acme"))
    assert r.json()["closed_at"] is not None
    with world.db.read() as s:
        actions = set(s.scalars(select(AuditRecord.action)))
    assert {"alert.status", "incident.status", "incident.open"} <= actions


def test_watchdog_raises_a_silence_once(app: Any, client: Any, world: Any) -> None:
    from vigil.server.detect.watchdog import Watchdog

    beat = {"sent_at": _t(), "interval": 0.2}
    assert client.post("/api/v1/sensors/heartbeat", json=beat, headers=world.sh("acme")).status_code == 200
    goodbye = {"sent_at": _t(), "interval": 0.2, "shutting_down": True}
    assert client.post("/api/v1/sensors/heartbeat", json=goodbye,
                       headers=world.sh("globex")).status_code == 200
    dog = Watchdog(app.state.db, app.state.detector, interval=60)
    time.sleep(0.7)
    # the app's own watchdog (lifespan, every second) may have raised it first: either way once
    assert dog.check() in (0, 1)
    assert dog.check() == 0
    fresh = Watchdog(app.state.db, app.state.detector, interval=60)  # another server process
    assert fresh.check() == 0
    (alert,) = _alerts(client, world, rule_id="sensor-silence")
    assert alert["severity"] == "high" and alert["evidence"]["heartbeat_interval"] == 0.2
    assert _alerts(client, world, "globex") == []  # said goodbye: no alert


def test_incident_tactics_include_single_tactic_techniques(client: Any, world: Any) -> None:
    """A reverse shell is execution; its raw TCP channel (T1095) is command and control."""
    shell = {"key": "77:1", "pid": 77, "ppid": 1, "name": "bash", "exe": "/usr/bin/bash",
             "cmdline": ["bash", "-i"], "uid": 1000, "euid": 1000, "stdio_sockets": [0, 1, 2],
             "stdio_raddr": "192.0.2.66", "stdio_rport": 4444, "start_time": _t(5)}
    snap = {"id": str(uuid.uuid4()), "taken_at": _t(), "full": True, "kind": "processes",
            "items": [shell]}
    _ingest(client, world, _batch([], [snap]))
    (inc,) = client.get("/api/v1/incidents", headers=world.h("acme")).json()["items"]
    assert inc["tactics"] == ["execution", "command-and-control"]
    assert inc["sources"] == ["192.0.2.66"]
