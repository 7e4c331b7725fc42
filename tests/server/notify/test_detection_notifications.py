"""From a sensor's batch to a receiver: detection queues the messages in the ingest transaction."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from vigil.server.notify.dispatcher import Notifier
from vigil.server.services import notifications

BASE = "/api/v1/notifications"


def _event(kind: str, at: datetime, **over: Any) -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "kind": kind, "observed_at": at.isoformat(),
            "src_ip": "203.0.113.66", "user": "root", "message": kind, **over}


def _ingest(api: Any, world: Any, events: list[dict[str, Any]]) -> None:
    r = api.post("/api/v1/sensors/ingest", headers=world.sh("acme"), json={
        "batch_id": str(uuid.uuid4()), "sent_at": datetime.now(UTC).isoformat(),
        "events": events, "snapshots": []})
    assert r.status_code == 200, r.text


def test_brute_force_reaches_the_webhook(api: Any, app: Any, world: Any, receiver: Any) -> None:
    if app.state.detector.notify is None:  # until app.py wires the hook
        app.state.detector.notify = notifications.notify_detection
    r = api.post(f"{BASE}/channels", headers=world.h("acme"), json={
        "name": "soc", "kind": "webhook", "target": receiver.url, "min_severity": "medium"})
    receiver.secrets.append(r.json()["signing_secret"])
    api.post(f"{BASE}/channels", headers=world.h("globex"), json={
        "name": "soc", "kind": "webhook", "target": receiver.url, "min_severity": "low"})
    t0 = datetime.now(UTC) - timedelta(seconds=30)

    _ingest(api, world, [_event("ssh_login_failed", t0 + timedelta(seconds=i)) for i in range(6)])
    notifier = Notifier(world.db, app.state.settings)
    notifier.run_once()
    first = receiver.wait_for(2)
    assert {r.headers["X-Vigil-Event"] for r in first} == {"alert.created", "incident.created"}
    alert = next(r.json for r in first if r.json["event"] == "alert.created")
    assert alert["severity"] == "medium" and alert["tenant"]["name"] == "acme"
    assert alert["data"]["rule_id"] == "ssh-password-guessing"
    assert alert["data"]["tactic"] == "credential-access"
    assert alert["data"]["vm"]["name"] == "vm-acme" and alert["data"]["src_ip"] == "203.0.113.66"
    incident = next(r.json for r in first if r.json["event"] == "incident.created")
    assert incident["subject"] == {"type": "incident", "id": alert["data"]["incident_id"]}

    # the guess worked: a high alert, and the incident's severity rises
    _ingest(api, world, [_event("ssh_login_success", t0 + timedelta(seconds=10))])
    notifier.run_once()
    later = receiver.wait_for(4)[2:]
    assert sorted(r.headers["X-Vigil-Event"] for r in later) == ["alert.created",
                                                                 "incident.updated"]
    assert all(r.json["severity"] == "high" and r.signed for r in later)
    log = api.get(f"{BASE}/deliveries?status=delivered", headers=world.h("acme")).json()["items"]
    assert len(log) == 4
    assert api.get(f"{BASE}/deliveries", headers=world.h("globex")).json()["items"] == []
