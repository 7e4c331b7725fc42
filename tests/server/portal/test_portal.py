"""Portal sessions: login (audited, failures too), CSRF on changes, logout ends the session."""

from __future__ import annotations

import re
from typing import Any


def _login(client: Any, email: str = "admin@example.org", password: str = "admin-pass-1") -> Any:
    return client.post("/login", data={"email": email, "password": password},
                       follow_redirects=False)


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, "the page carries its CSRF token"
    return match.group(1)


def test_login_dashboard_logout(client: Any, world: Any) -> None:
    r = client.get("/", headers={"accept": "text/html"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login"
    r = _login(client, password="wrong-password")
    assert r.status_code == 401 and "wrong e-mail or password" in r.text
    r = _login(client)
    assert r.status_code == 303
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    page = client.get("/")
    assert page.status_code == 200 and "vm-acme" in page.text and "vm-globex" in page.text
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    assert page.headers["x-frame-options"] == "DENY"
    csrf = _csrf(page.text)
    assert client.post("/logout", data={"csrf": "forged"}).status_code == 403
    r = client.post("/logout", data={"csrf": csrf}, follow_redirects=False)
    assert r.status_code == 303
    # the old session token is dead even if a client kept it
    client.cookies.set("vigil_session", cookie.split(";")[0].split("=", 1)[1])
    assert client.get("/api/v1/vms").status_code == 401
    actions = [(a["action"], a["outcome"]) for a in client.get(
        "/api/v1/audit?limit=50", headers=world.h("admin")).json()["items"]]
    assert ("auth.login", "failure") in actions and ("auth.login", "success") in actions
    assert ("auth.logout", "success") in actions


def test_session_changes_need_the_csrf_token(client: Any, world: Any) -> None:
    _login(client)
    vm = world.sensors["acme"]["vm_id"]
    page = client.get(f"/vms/{vm}")
    assert page.status_code == 200
    r = client.post(f"/api/v1/vms/{vm}/live-query")
    assert r.status_code == 403 and "CSRF" in r.json()["detail"]
    token = re.search(r'data-csrf="([^"]+)"', page.text).group(1)
    r = client.post(f"/api/v1/vms/{vm}/live-query", headers={"X-CSRF-Token": token})
    assert r.status_code == 409  # accepted past CSRF; the sensor has not beaten yet


def test_csp_user_sees_only_its_tenant_in_the_portal(client: Any, world: Any) -> None:
    _login(client, "ops@acme.example", "csp-pass-12")
    page = client.get("/")
    assert "vm-acme" in page.text and "vm-globex" not in page.text
    assert client.get(f"/vms/{world.sensors['globex']['vm_id']}").status_code == 404
