"""The notifications API: who may manage channels, tenant isolation, secrets, tests, the log."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select
from tests.server.notify.helpers import verify_signature

from vigil.server.db.models import AuditRecord, NotificationDelivery
from vigil.server.notify.dispatcher import Notifier
from vigil.server.services import auth
from vigil.server.services.audit import SYSTEM

BASE = "/api/v1/notifications"


def _user(world: Any, role: str, tenant: str | None = "acme") -> dict[str, str]:
    email = f"{role}@{tenant or 'all'}.example"
    with world.db.write() as s:
        auth.create_user(s, email=email, password="pass-word-1", role=role, tenant=tenant,
                         actor=SYSTEM)
        token = auth.create_api_token(s, email=email, name="t", actor=SYSTEM)
    return {"Authorization": f"Bearer {token}"}


def _webhook(api: Any, world: Any, url: str, who: str = "acme", **kw: Any) -> dict[str, Any]:
    r = api.post(f"{BASE}/channels", headers=world.h(who),
                 json={"name": kw.pop("name", "soc-hook"), "kind": "webhook", "target": url, **kw})
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def _actions(world: Any) -> list[str]:
    with world.db.read() as s:
        return list(s.scalars(select(AuditRecord.action).where(
            AuditRecord.action.like("notify.%")).order_by(AuditRecord.id)))


def test_webhook_lifecycle(api: Any, world: Any, receiver: Any) -> None:
    created = _webhook(api, world, receiver.url + "?token=abc", min_severity="medium")
    assert created["kind"] == "webhook" and created["min_severity"] == "medium"
    assert created["target"] == receiver.url + "?token=abc"
    secret = created["signing_secret"]
    assert secret.startswith("vgn_")
    cid = created["id"]
    r = api.get(f"{BASE}/channels/{cid}/secret", headers=world.h("acme"))
    assert r.status_code == 200 and r.json() == {"channel_id": cid, "signing_secret": secret}

    receiver.secrets.append(secret)
    r = api.post(f"{BASE}/channels/{cid}/test", headers=world.h("acme"))
    assert r.status_code == 200, r.text
    test = r.json()
    assert (test["status"], test["event"], test["attempts"]) == ("delivered", "notification.test", 1)
    (req,) = receiver.requests
    assert req.signed and verify_signature(secret, req.headers, req.body)
    assert req.json["event"] == "notification.test" and req.json["tenant"]["name"] == "acme"
    assert req.headers["X-Vigil-Delivery"] == str(test["id"])

    r = api.get(f"{BASE}/channels", headers=world.h("acme"))
    assert [c["id"] for c in r.json()["items"]] == [cid]
    assert "signing_secret" not in r.json()["items"][0]

    r = api.delete(f"{BASE}/channels/{cid}", headers=world.h("acme"))
    assert r.status_code == 204
    assert api.get(f"{BASE}/channels", headers=world.h("acme")).json()["items"] == []
    assert api.get(f"{BASE}/deliveries", headers=world.h("acme")).json()["items"] == []
    assert api.get(f"{BASE}/channels/{cid}/secret", headers=world.h("acme")).status_code == 404
    assert _actions(world) == ["notify.channel.create", "notify.channel.secret",
                               "notify.channel.test", "notify.channel.delete"]


def test_failed_test_reports_the_error(api: Any, world: Any, receiver: Any) -> None:
    cid = _webhook(api, world, receiver.url)["id"]
    receiver.fail_first, receiver.fail_status = -1, 404
    r = api.post(f"{BASE}/channels/{cid}/test", headers=world.h("acme"))
    body = r.json()
    assert (body["status"], body["response_status"], body["attempts"]) == ("failed", 404, 1)
    assert body["last_error"].startswith("HTTP 404")


def test_readers_list_but_do_not_manage(api: Any, world: Any, receiver: Any) -> None:
    cid = _webhook(api, world, receiver.url + "/secret-path")["id"]
    for role in ("viewer", "cirt"):
        h = _user(world, role)
        r = api.get(f"{BASE}/channels", headers=h)
        assert r.status_code == 200
        (item,) = r.json()["items"]
        assert item["target"].endswith("/…") and "secret-path" not in item["target"]
        assert api.get(f"{BASE}/deliveries", headers=h).status_code == 200
        assert api.post(f"{BASE}/channels", headers=h, json={
            "name": "x", "kind": "webhook", "target": receiver.url}).status_code == 403
        assert api.delete(f"{BASE}/channels/{cid}", headers=h).status_code == 403
        assert api.post(f"{BASE}/channels/{cid}/test", headers=h).status_code == 403
        assert api.get(f"{BASE}/channels/{cid}/secret", headers=h).status_code == 403
    assert receiver.requests == []
    assert api.get(f"{BASE}/channels").status_code == 401


def test_tenants_are_isolated(api: Any, world: Any, receiver: Any) -> None:
    acme = _webhook(api, world, receiver.url)
    globex = _webhook(api, world, receiver.url, who="globex")
    assert acme["tenant_id"] != globex["tenant_id"]
    for path, method in [(f"/channels/{acme['id']}", "delete"),
                         (f"/channels/{acme['id']}/test", "post"),
                         (f"/channels/{acme['id']}/secret", "get")]:
        r = getattr(api, method)(BASE + path, headers=world.h("globex"))
        assert r.status_code == 404, (path, r.text)
    assert [c["id"] for c in api.get(f"{BASE}/channels", headers=world.h("globex")).json()[
        "items"]] == [globex["id"]]
    assert acme["signing_secret"] != globex["signing_secret"]
    # a csp cannot create for, or filter by, another tenant
    r = api.post(f"{BASE}/channels", headers=world.h("globex"), json={
        "name": "sneaky", "kind": "webhook", "target": receiver.url, "tenant": "acme"})
    assert r.status_code == 404
    assert api.get(f"{BASE}/channels?tenant=acme", headers=world.h("globex")).status_code == 404
    # deliveries: each tenant sees its own
    api.post(f"{BASE}/channels/{acme['id']}/test", headers=world.h("acme"))
    api.post(f"{BASE}/channels/{globex['id']}/test", headers=world.h("globex"))
    for who, channel in (("acme", acme), ("globex", globex)):
        items = api.get(f"{BASE}/deliveries", headers=world.h(who)).json()["items"]
        assert [d["channel_id"] for d in items] == [channel["id"]]
    # the admin sees both, or one tenant when asked
    assert len(api.get(f"{BASE}/channels", headers=world.h("admin")).json()["items"]) == 2
    r = api.get(f"{BASE}/deliveries?tenant=globex", headers=world.h("admin"))
    assert [d["channel_id"] for d in r.json()["items"]] == [globex["id"]]


def test_admin_names_the_tenant(api: Any, world: Any, receiver: Any) -> None:
    body = {"name": "a", "kind": "webhook", "target": receiver.url}
    r = api.post(f"{BASE}/channels", headers=world.h("admin"), json=body)
    assert r.status_code == 422 and "tenant" in r.json()["detail"]
    r = api.post(f"{BASE}/channels", headers=world.h("admin"), json={**body, "tenant": "nope"})
    assert r.status_code == 404
    r = api.post(f"{BASE}/channels", headers=world.h("admin"), json={**body, "tenant": "globex"})
    assert r.status_code == 201
    assert r.json()["tenant_id"] == api.post(  # the same tenant as globex's own channels
        f"{BASE}/channels", headers=world.h("globex"),
        json={**body, "name": "b"}).json()["tenant_id"]


@pytest.mark.parametrize("change, message", [
    ({"kind": "sms"}, "unknown channel kind"),
    ({"target": "ftp://example.org/"}, "not a webhook URL"),
    ({"min_severity": "severe"}, "unknown severity"),
    ({"on_alerts": False, "on_incidents": False}, "sends nothing"),
    ({"kind": "email", "target": "not-an-address"}, "not an e-mail address"),
    ({"surprise": 1}, "invalid request"),
])
def test_bad_channels_are_refused(api: Any, world: Any, change: dict[str, Any],
                                  message: str) -> None:
    body = {"name": "x", "kind": "webhook", "target": "https://example.org/hook", **change}
    r = api.post(f"{BASE}/channels", headers=world.h("acme"), json=body)
    assert r.status_code == 422 and message in r.json()["detail"], r.text
    assert _actions(world) == []


def test_duplicate_names_conflict(api: Any, world: Any, receiver: Any) -> None:
    _webhook(api, world, receiver.url)
    r = api.post(f"{BASE}/channels", headers=world.h("acme"),
                 json={"name": "soc-hook", "kind": "webhook", "target": receiver.url})
    assert r.status_code == 409
    _webhook(api, world, receiver.url, who="globex")  # the same name in another tenant is fine


def test_email_channel_and_secret(api: Any, world: Any, smtp_server: Any) -> None:
    r = api.post(f"{BASE}/channels", headers=world.h("acme"), json={
        "name": "soc-mail", "kind": "email", "target": "soc@example.org"})
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["signing_secret"] is None
    r = api.get(f"{BASE}/channels/{created['id']}/secret", headers=world.h("acme"))
    assert r.status_code == 422 and "only webhooks" in r.json()["detail"]
    r = api.post(f"{BASE}/channels/{created['id']}/test", headers=world.h("acme"))
    assert r.json()["status"] == "delivered", r.text
    (env,) = smtp_server.wait_for(1)
    assert env.rcpt_tos == ["soc@example.org"]
    assert b"Subject: [Vigil TEST] Test notification from Vigil" in env.content
    viewer = _user(world, "viewer")
    (item,) = api.get(f"{BASE}/channels", headers=viewer).json()["items"]
    assert item["target"] == "s…@example.org"


def test_delivery_log_filters(api: Any, world: Any, receiver: Any, app: Any) -> None:
    from vigil.server.services import notifications

    ok = _webhook(api, world, receiver.url, name="ok", min_severity="low")
    bad = _webhook(api, world, receiver.url.replace("/hook", "/fail"), name="bad",
                   min_severity="low")
    receiver.secrets += [ok["signing_secret"], bad["signing_secret"]]
    original = receiver.handle

    def handle(path: str, headers: dict[str, str], body: bytes) -> int:
        code = original(path, headers, body)
        return 500 if path == "/fail" else code

    receiver.handle = handle
    with world.db.write() as s:
        for i in range(3):
            notifications.enqueue(s, tenant_id=ok["tenant_id"], event="alert.created",
                                  subject_type="alert", subject_id=i, severity="high",
                                  payload={"title": f"alert {i}"})
    Notifier(world.db, app.state.settings, workers=8).run_once()
    h = world.h("acme")
    everything = api.get(f"{BASE}/deliveries", headers=h).json()["items"]
    assert len(everything) == 6 and everything[0]["id"] > everything[-1]["id"]
    delivered = api.get(f"{BASE}/deliveries?status=delivered", headers=h).json()["items"]
    assert {d["channel_id"] for d in delivered} == {ok["id"]} and len(delivered) == 3
    pending = api.get(f"{BASE}/deliveries?status=pending&channel_id={bad['id']}",
                      headers=h).json()["items"]
    assert len(pending) == 3 and all(d["last_error"].startswith("HTTP 500") for d in pending)
    assert all(d["payload"]["data"]["title"].startswith("alert ") for d in pending)
    page = api.get(f"{BASE}/deliveries?limit=2", headers=h).json()
    assert len(page["items"]) == 2 and page["next_cursor"]
    assert api.get(f"{BASE}/deliveries?status=lost", headers=h).status_code == 422
    csv = api.get(f"{BASE}/deliveries?format=csv", headers=h)
    assert csv.status_code == 200 and csv.text.count("\n") == 7
    with world.db.read() as s:
        assert len(s.scalars(select(NotificationDelivery)).all()) == 6


def test_endpoints_are_in_the_openapi_document(api: Any) -> None:
    paths = api.get("/openapi.json").json()["paths"]
    for path in ("/channels", "/channels/{channel_id}", "/channels/{channel_id}/test",
                 "/channels/{channel_id}/secret", "/deliveries"):
        assert BASE + path in paths
