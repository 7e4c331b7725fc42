"""The sensor API refuses bad input with a clear error and stores nothing twice or lost."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from vigil.server.db.models import EnrollmentToken, Event, Snapshot


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _event(**over: Any) -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "kind": "ssh_login_failed", "observed_at": _now(),
            "src_ip": "198.51.100.7", "user": "root", "message": "Failed password", **over}


def _batch(events: list[dict[str, Any]], snapshots: list[dict[str, Any]] | None = None) -> dict:
    return {"batch_id": str(uuid.uuid4()), "sent_at": _now(), "events": events,
            "snapshots": snapshots or []}


def _count(world: Any, model: Any = Event) -> int:
    with world.db.read() as s:
        return s.scalar(select(func.count()).select_from(model)) or 0


def test_no_token_is_refused(client: Any, world: Any) -> None:
    r = client.post("/api/v1/sensors/ingest", json=_batch([_event()]))
    assert r.status_code == 401
    assert "sensor authentication required" in r.json()["detail"]
    r = client.post("/api/v1/sensors/heartbeat", json={"sent_at": _now()},
                    headers={"Authorization": "Bearer vgs_" + "0" * 36 + "_nope"})
    assert r.status_code == 401 and "unknown sensor" in r.json()["detail"]
    assert client.get("/api/v1/vms").status_code == 401
    assert client.get("/api/v1/vms", headers={"Authorization": "Bearer vgu_wrong"}).status_code == 401
    assert _count(world) == 0


def test_user_token_cannot_act_as_sensor_and_back(client: Any, world: Any) -> None:
    r = client.post("/api/v1/sensors/ingest", json=_batch([_event()]), headers=world.h("acme"))
    assert r.status_code == 401
    r = client.get("/api/v1/vms", headers=world.sh("acme"))
    assert r.status_code == 403 and "sensor token" in r.json()["detail"]


def test_revoked_sensor_is_refused_on_its_next_call(client: Any, world: Any) -> None:
    assert client.post("/api/v1/sensors/ingest", json=_batch([_event()]),
                       headers=world.sh("acme")).status_code == 200
    sid = world.sensors["acme"]["sensor_id"]
    r = client.post(f"/api/v1/sensors/{sid}/revoke", headers=world.h("acme"))
    assert r.status_code == 200 and r.json()["status"] == "revoked"
    r = client.post("/api/v1/sensors/ingest", json=_batch([_event()]), headers=world.sh("acme"))
    assert r.status_code == 401 and "revoked" in r.json()["detail"]
    r = client.post("/api/v1/sensors/heartbeat", json={"sent_at": _now()}, headers=world.sh("acme"))
    assert r.status_code == 401
    assert _count(world) == 1
    # the revocation is audited
    audit = client.get("/api/v1/audit?action=sensor.revoke", headers=world.h("admin")).json()
    assert audit["items"][0]["target_id"] == sid


def test_enrollment_token_is_one_time_and_expires(client: Any, world: Any) -> None:
    r = client.post("/api/v1/enrollment-tokens", headers=world.h("acme"), json={"tenant": "acme"})
    assert r.status_code == 201
    token = r.json()["token"]
    req = {"enroll_token": token, "kind": "guest", "hostname": "web-1"}
    assert client.post("/api/v1/sensors/enroll", json=req).status_code == 201
    r = client.post("/api/v1/sensors/enroll", json=req)
    assert r.status_code == 401 and "used already" in r.json()["detail"]
    r = client.post("/api/v1/enrollment-tokens", headers=world.h("acme"), json={"tenant": "acme"})
    token = r.json()["token"]
    with world.db.write() as s:
        for row in s.scalars(select(EnrollmentToken).where(EnrollmentToken.used_at.is_(None))):
            row.expires_at = datetime.now(UTC) - timedelta(seconds=1)
    r = client.post("/api/v1/sensors/enroll", json={**req, "enroll_token": token})
    assert r.status_code == 401 and "expired" in r.json()["detail"]
    r = client.post("/api/v1/sensors/enroll", json={**req, "enroll_token": "vge_not-a-token"})
    assert r.status_code == 401 and "unknown" in r.json()["detail"]
    failures = client.get("/api/v1/audit?action=sensor.enroll", headers=world.h("admin")).json()
    assert sum(1 for a in failures["items"] if a["outcome"] == "failure") == 3


def test_malformed_batches_store_nothing(client: Any, world: Any) -> None:
    good = _event()
    cases = [
        b"{not json",
        _batch([good, _event(kind="made_up_kind")]),
        _batch([good, _event(src_ip="999.1.1.1")]),
        _batch([good, _event(observed_at="yesterday")]),
        _batch([good, {**_event(), "surprise": 1}]),
        _batch([good], [{"id": str(uuid.uuid4()), "kind": "processes", "taken_at": _now(),
                         "full": True, "items": [{"key": "k", "pid": -5, "name": "x"}]}]),
        _batch([good, _event(message="x" * 10_000)]),
        _batch([good, _event(id="NOT-A-UUID")]),
    ]
    for case in cases:
        kwargs = {"content": case} if isinstance(case, bytes) else {"json": case}
        r = client.post("/api/v1/sensors/ingest", headers=world.sh("acme"), **kwargs)
        assert r.status_code == 422, r.text
        assert "nothing was stored" in r.json()["detail"]
    assert _count(world) == 0
    # the same good event alone is then accepted once
    r = client.post("/api/v1/sensors/ingest", headers=world.sh("acme"), json=_batch([good]))
    assert r.json()["accepted_events"] == 1


def test_oversized_batch_says_the_limit(client: Any, world: Any, app: Any) -> None:
    limit = app.state.settings.max_batch_bytes
    events = [_event(message="y" * 8000) for _ in range(limit // 8000 + 10)]
    r = client.post("/api/v1/sensors/ingest", headers=world.sh("acme"), json=_batch(events))
    assert r.status_code == 413
    assert str(limit) in r.json()["detail"] and "smaller batches" in r.json()["detail"]
    assert _count(world) == 0


def test_duplicate_batch_is_stored_once(client: Any, world: Any) -> None:
    events = [_event() for _ in range(50)]
    snap = {"id": str(uuid.uuid4()), "kind": "processes", "taken_at": _now(), "full": True,
            "items": [{"key": "1:1", "pid": 1, "name": "init"}]}
    batch = _batch(events, [snap])
    first = client.post("/api/v1/sensors/ingest", headers=world.sh("acme"), json=batch).json()
    assert first["accepted_events"] == 50 and first["accepted_snapshots"] == 1
    again = client.post("/api/v1/sensors/ingest", headers=world.sh("acme"), json=batch).json()
    assert again["accepted_events"] == 0 and again["duplicate_events"] == 50
    assert again["duplicate_snapshots"] == 1
    # a batch mixing old and new events stores only the new ones
    mixed = _batch(events[:10] + [_event()])
    r = client.post("/api/v1/sensors/ingest", headers=world.sh("acme"), json=mixed).json()
    assert r["accepted_events"] == 1 and r["duplicate_events"] == 10
    assert _count(world) == 51
    assert _count(world, Snapshot) == 1


def test_heartbeat_hands_out_live_query_once(client: Any, world: Any) -> None:
    vm = world.sensors["acme"]["vm_id"]
    r = client.post(f"/api/v1/vms/{vm}/live-query", headers=world.h("acme"))
    assert r.status_code == 409 and "online" in r.json()["detail"]
    beat = {"sent_at": _now(), "resources": {"cpu_percent": 12.5, "mem_total": 1000,
                                              "mem_used": 400, "cpu_count": 2}}
    assert client.post("/api/v1/sensors/heartbeat", json=beat,
                       headers=world.sh("acme")).json()["tasks"] == []
    task = client.post(f"/api/v1/vms/{vm}/live-query", headers=world.h("acme")).json()
    tasks = client.post("/api/v1/sensors/heartbeat", json=beat, headers=world.sh("acme")).json()
    assert [t["id"] for t in tasks["tasks"]] == [task["id"]]
    assert client.post("/api/v1/sensors/heartbeat", json=beat,
                       headers=world.sh("acme")).json()["tasks"] == []
    result = {"ok": True, "result": {"processes": [{"key": "1:1", "pid": 1, "name": "init"}],
                                     "connections": []}}
    r = client.post(f"/api/v1/sensors/tasks/{task['id']}/result", json=result,
                    headers=world.sh("globex"))
    assert r.status_code == 404  # another sensor cannot answer it
    r = client.post(f"/api/v1/sensors/tasks/{task['id']}/result", json=result,
                    headers=world.sh("acme"))
    assert r.status_code == 200
    done = client.get(f"/api/v1/tasks/{task['id']}", headers=world.h("acme")).json()
    assert done["status"] == "done" and done["result"]["processes"][0]["name"] == "init"
    sensors = client.get("/api/v1/sensors", headers=world.h("acme")).json()["items"]
    assert sensors[0]["status"] == "online" and sensors[0]["resources"]["cpu_percent"] == 12.5


def test_pagination_and_csv(client: Any, world: Any) -> None:
    events = [_event(user=f"u{i}") for i in range(25)]
    client.post("/api/v1/sensors/ingest", headers=world.sh("acme"), json=_batch(events))
    seen: list[int] = []
    cursor = None
    while True:
        url = "/api/v1/events?limit=10" + (f"&cursor={cursor}" if cursor else "")
        page = client.get(url, headers=world.h("acme")).json()
        seen += [e["seq"] for e in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert len(seen) == 25 == len(set(seen)) and seen == sorted(seen, reverse=True)
    r = client.get("/api/v1/events?format=csv&username=u3", headers=world.h("acme"))
    assert r.headers["content-type"].startswith("text/csv")
    lines = r.text.strip().splitlines()
    assert lines[0].startswith("seq,uuid,") and len(lines) == 2 and ",u3," in lines[1]
    assert client.get("/api/v1/events?cursor=%%%", headers=world.h("acme")).status_code == 422
    assert client.get("/api/v1/events?limit=0", headers=world.h("acme")).status_code == 422


def test_csv_cells_cannot_become_formulas(client: Any, world: Any) -> None:
    client.post("/api/v1/sensors/ingest", headers=world.sh("acme"),
                json=_batch([_event(user="=HYPERLINK(\"http://x\")")]))
    text = client.get("/api/v1/events?format=csv", headers=world.h("acme")).text
    assert "'=HYPERLINK" in text


def test_inventory_csv_has_a_column_per_field(client: Any, world: Any) -> None:
    snap = {"id": str(uuid.uuid4()), "kind": "processes", "taken_at": _now(), "full": True,
            "items": [{"key": "7:1", "pid": 7, "ppid": 1, "name": "sshd",
                       "cmdline": ["/usr/sbin/sshd", "-D"], "uid": 0, "euid": 0}]}
    client.post("/api/v1/sensors/ingest", headers=world.sh("acme"), json=_batch([], [snap]))
    vm = world.sensors["acme"]["vm_id"]
    r = client.get(f"/api/v1/vms/{vm}/processes?format=csv", headers=world.h("acme"))
    header, row = r.text.strip().splitlines()
    cols = header.split(",")
    assert cols[:2] == ["first_seen", "removed_at"] and {"pid", "ppid", "name", "cmdline"} <= set(cols)
    values = dict(zip(cols, next(__import__("csv").reader([row])), strict=True))
    assert values["pid"] == "7" and values["name"] == "sshd"
    assert values["cmdline"] == '["/usr/sbin/sshd","-D"]' and values["removed_at"] == ""


def test_event_time_filters(client: Any, world: Any) -> None:
    old = _event(observed_at="2026-01-01T10:00:00+02:00", user="early")
    new = _event(user="late")
    client.post("/api/v1/sensors/ingest", headers=world.sh("acme"), json=_batch([old, new]))
    got = client.get("/api/v1/events?since=2026-06-01T00:00:00Z", headers=world.h("acme")).json()
    assert [e["username"] for e in got["items"]] == ["late"]
    got = client.get("/api/v1/events?until=2026-06-01T00:00:00Z", headers=world.h("acme")).json()
    assert [e["observed_at"] for e in got["items"]] == ["2026-01-01T08:00:00Z"]


def test_a_vm_is_one_record_whichever_side_sees_it_first(client: Any, world: Any) -> None:
    def enroll(**ids: str) -> dict[str, Any]:
        tok = client.post("/api/v1/enrollment-tokens", headers=world.h("acme"),
                          json={"tenant": "acme"}).json()["token"]
        r = client.post("/api/v1/sensors/enroll", json={
            "enroll_token": tok, "kind": "guest", "hostname": "web-2", **ids})
        assert r.status_code == 201, r.text
        return r.json()

    smbios = "4c4c4544-0042-3510-8052-b4c04f4d4e31"
    # an operator (or a host sensor) registers the VM first, by its SMBIOS UUID...
    r = client.post("/api/v1/vms", headers=world.h("acme"),
                    json={"name": "web-2", "smbios_uuid": smbios})
    vm_id = r.json()["id"]
    # ...then the guest sensor enrolls from inside and lands on that record
    first = enroll(machine_id="ab" * 16, smbios_uuid=smbios.upper())
    assert first["vm_id"] == vm_id
    # a re-installed sensor on the same guest (same machine id) too
    assert enroll(machine_id="ab" * 16)["vm_id"] == vm_id
    # the same ids in another tenant are another VM
    tok = client.post("/api/v1/enrollment-tokens", headers=world.h("globex"),
                      json={"tenant": "globex"}).json()["token"]
    other = client.post("/api/v1/sensors/enroll", json={
        "enroll_token": tok, "kind": "guest", "hostname": "web-2", "machine_id": "ab" * 16}).json()
    assert other["vm_id"] != vm_id
    vms = client.get("/api/v1/vms", headers=world.h("acme")).json()["items"]
    assert sum(1 for v in vms if v["name"] == "web-2") == 1
