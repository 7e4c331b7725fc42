"""A csp user sees and changes only its own tenant's records: every list and detail endpoint."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from vigil.server.db.models import Alert, Host, Incident, NotificationChannel
from vigil.server.services import notifications


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _seed(client: Any, world: Any) -> dict[str, dict[str, Any]]:
    """Per tenant: a host, the sensor's VM, an event, inventory, an incident and an alert."""
    ids: dict[str, dict[str, Any]] = {}
    for tenant in ("acme", "globex"):
        r = client.post("/api/v1/hosts", headers=world.h(tenant),
                        json={"name": f"hv-{tenant}", "site": "Frankfurt", "country": "de",
                              "latitude": 50.1, "longitude": 8.7})
        assert r.status_code == 201, r.text
        host_id = r.json()["id"]
        batch = {
            "batch_id": str(uuid.uuid4()), "sent_at": _now(),
            "events": [{"id": str(uuid.uuid4()), "kind": "ssh_login_failed", "observed_at": _now(),
                        "src_ip": "203.0.113.9", "user": f"user-{tenant}", "message": "x"}],
            "snapshots": [{"id": str(uuid.uuid4()), "kind": kind, "taken_at": _now(), "full": True,
                           "items": items}
                          for kind, items in {
                              "processes": [{"key": "1:1", "pid": 1, "name": f"init-{tenant}"}],
                              "connections": [{"key": "c", "proto": "tcp", "laddr": "10.0.0.2",
                                               "lport": 22, "raddr": "203.0.113.9",
                                               "rport": 5555, "status": "ESTABLISHED"}],
                              "listening": [{"key": "l", "proto": "tcp", "addr": "0.0.0.0",
                                             "port": 22}],
                              "services": [{"key": "ssh.service", "name": "ssh.service"}],
                              "packages": [{"key": "dpkg:bash", "manager": "dpkg",
                                            "name": "bash"}],
                              "users": [{"key": "u", "name": "root"}],
                          }.items()],
        }
        r = client.post("/api/v1/sensors/ingest", headers=world.sh(tenant), json=batch)
        assert r.status_code == 200, r.text
        r = client.post("/api/v1/sensors/heartbeat", headers=world.sh(tenant),
                        json={"sent_at": _now()})
        assert r.status_code == 200
        vm_id = world.sensors[tenant]["vm_id"]
        tenant_id = client.get(f"/api/v1/vms/{vm_id}", headers=world.h("admin")).json()[
            "tenant_id"]
        with world.db.write() as s:
            inc = Incident(tenant_id=tenant_id, vm_id=vm_id, title=f"inc {tenant}",
                           severity="high")
            s.add(inc)
            s.flush()
            alert = Alert(tenant_id=tenant_id, vm_id=vm_id, incident_id=inc.id, rule_id="r",
                          title=f"alert {tenant}", severity="high", techniques=[], controls=[],
                          observed_at=datetime.now(UTC), evidence={}, dedup_key=f"r|{tenant}")
            s.add(alert)
            s.flush()
            channel = NotificationChannel(tenant_id=tenant_id, name=f"hook-{tenant}",
                                          kind="webhook", target=f"http://127.0.0.1:9/{tenant}",
                                          min_severity="low")
            s.add(channel)
            s.flush()
            notifications.enqueue(s, tenant_id=tenant_id, event="alert.created",
                                  subject_type="alert", subject_id=alert.id, severity="high",
                                  payload=notifications.alert_payload(alert))
            ids[tenant] = {"host_id": host_id, "vm_id": vm_id, "incident_id": inc.id,
                           "alert_id": alert.id, "tenant_id": tenant_id, "channel_id": channel.id,
                           "sensor_id": world.sensors[tenant]["sensor_id"]}
        ev = client.get("/api/v1/events", headers=world.h(tenant)).json()["items"]
        ids[tenant]["seq"] = ev[0]["seq"]
        r = client.post(f"/api/v1/vms/{vm_id}/live-query", headers=world.h(tenant))
        assert r.status_code == 202, r.text
        ids[tenant]["task_id"] = r.json()["id"]
    return ids


def _routes(app: Any) -> list[str]:
    """Every GET of the read API, from the OpenAPI document (so new endpoints are covered)."""
    return sorted(
        path for path, ops in app.openapi()["paths"].items()
        if "get" in ops and path.startswith("/api/v1/")
        and path not in ("/api/v1/health", "/api/v1/me", "/api/v1/audit")
    )


FILL = {"{host_id}": "host_id", "{vm_id}": "vm_id", "{incident_id}": "incident_id",
        "{alert_id}": "alert_id", "{seq}": "seq", "{task_id}": "task_id",
        "{channel_id}": "channel_id"}


def _fill(path: str, ids: dict[str, Any]) -> str:
    for placeholder, key in FILL.items():
        path = path.replace(placeholder, str(ids[key]))
    assert "{" not in path, f"test does not know how to fill {path}"
    return path


def _tenants_in(body: Any) -> set[int]:
    items = body["items"] if isinstance(body, dict) and "items" in body else [body]
    found = set()
    for item in items:
        if "tenant_id" in item:
            found.add(item["tenant_id"])
    return found


def test_every_read_endpoint_is_tenant_scoped(app: Any, client: Any, world: Any) -> None:
    ids = _seed(client, world)
    routes = _routes(app)
    assert len(routes) >= 15, routes
    checked_lists = checked_details = 0
    for path in routes:
        own = _fill(path, ids["acme"])
        r = client.get(own, headers=world.h("acme"))
        assert r.status_code == 200, (own, r.text)
        body = r.json()
        if "items" in body:
            checked_lists += 1
            assert body["items"], f"{own}: the tenant's own data should be listed"
            assert _tenants_in(body) <= {ids["acme"]["tenant_id"]}, own
            text = r.text
            assert "globex" not in text, f"{own} leaks the other tenant's data"
            # the CSV form is scoped too
            csv = client.get(own + ("&" if "?" in own else "?") + "format=csv",
                             headers=world.h("acme"))
            assert csv.status_code == 200 and "globex" not in csv.text, own
        if "{" in path:
            checked_details += 1
            other = _fill(path, ids["globex"])
            r = client.get(other, headers=world.h("acme"))
            assert r.status_code == 404, f"{other} readable across tenants: {r.status_code}"
            assert "globex" not in r.text
    assert checked_lists >= 10 and checked_details >= 10
    # the admin sees both tenants
    both = client.get("/api/v1/vms", headers=world.h("admin")).json()["items"]
    assert {v["tenant_id"] for v in both} == {ids["acme"]["tenant_id"], ids["globex"]["tenant_id"]}


def test_changes_are_tenant_scoped(client: Any, world: Any) -> None:
    ids = _seed(client, world)
    g = ids["globex"]
    r = client.post(f"/api/v1/sensors/{g['sensor_id']}/revoke", headers=world.h("acme"))
    assert r.status_code == 404
    r = client.post(f"/api/v1/vms/{g['vm_id']}/live-query", headers=world.h("acme"))
    assert r.status_code == 404
    r = client.post("/api/v1/hosts", headers=world.h("acme"), json={"name": "x", "tenant": "globex"})
    assert r.status_code == 404
    r = client.post("/api/v1/vms", headers=world.h("acme"),
                    json={"name": "x", "host_id": g["host_id"]})
    assert r.status_code == 404
    r = client.post("/api/v1/enrollment-tokens", headers=world.h("acme"),
                    json={"tenant": "globex"})
    assert r.status_code == 404
    # nothing of globex changed
    sensors = client.get("/api/v1/sensors", headers=world.h("globex")).json()["items"]
    assert sensors[0]["revoked_at"] is None
    with world.db.read() as s:
        from sqlalchemy import func, select

        assert s.scalar(select(func.count()).select_from(Host).where(
            Host.tenant_id == g["tenant_id"])) == 1


@pytest.mark.parametrize("who", ["acme", "globex"])
def test_audit_log_is_admin_only(client: Any, world: Any, who: str) -> None:
    assert client.get("/api/v1/audit", headers=world.h(who)).status_code == 403
    assert client.get("/api/v1/audit", headers=world.h("admin")).status_code == 200
