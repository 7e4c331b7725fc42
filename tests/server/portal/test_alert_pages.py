"""The alert and incident pages on alerts the real engine raised from a real ingest: lists,
filters, detail pages, status forms (CSRF, audit), tenant isolation and escaping."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

HOSTILE = "<script>alert(1)</script>"
ATTACKER = "198.51.100.7"
C2 = "203.0.113.9"
KEY_SHA = "ab" * 32
SHELL_SHA = "cd" * 32


def _t(seconds_ago: float = 0) -> str:
    return (datetime.now(UTC) - timedelta(seconds=seconds_ago)).isoformat()


def _event(kind: str, ago: float, **fields: Any) -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "kind": kind, "observed_at": _t(ago), **fields}


def _attack() -> dict[str, Any]:
    """A brute-forced SSH login by a user with a hostile name, an SSH key planted, a shell
    wired to a remote port: four rules fire, one incident."""
    fails = [_event("ssh_login_failed", 120 - i, src_ip=ATTACKER, user=HOSTILE,
                    message=f"Failed password for {HOSTILE} from {ATTACKER} port 4{i}022 ssh2")
             for i in range(6)]
    login = _event("ssh_login_success", 100, src_ip=ATTACKER, user=HOSTILE,
                   message=f"Accepted password for {HOSTILE} from {ATTACKER} port 40999 ssh2")
    key = _event("persistence_created", 90, path="/root/.ssh/authorized_keys",
                 message="file created: /root/.ssh/authorized_keys",
                 data={"sha256": KEY_SHA, "diff": f"+ssh-ed25519 AAAAC3Nz {HOSTILE}"})
    shell = {"key": "4242:1", "pid": 4242, "ppid": 1, "name": "bash", "exe": "/usr/bin/bash",
             "cmdline": ["bash", "-i"], "uid": 1000, "euid": 1000, "username": "deploy",
             "start_time": _t(80), "sha256": SHELL_SHA, "stdio_sockets": [0, 1, 2],
             "stdio_raddr": C2, "stdio_rport": 4444}
    snapshot = {"id": str(uuid.uuid4()), "taken_at": _t(80), "full": True, "kind": "processes",
                "items": [shell]}
    return {"batch_id": str(uuid.uuid4()), "sent_at": _t(), "events": [*fails, login, key],
            "snapshots": [snapshot]}


def _ingest(client: Any, world: Any, body: dict[str, Any], tenant: str = "acme") -> None:
    r = client.post("/api/v1/sensors/ingest", json=body, headers=world.sh(tenant))
    assert r.status_code == 200, r.text


def _login(client: Any, email: str = "ops@acme.example", password: str = "csp-pass-12") -> None:
    r = client.post("/login", data={"email": email, "password": password},
                    follow_redirects=False)
    assert r.status_code == 303


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, "the page carries its CSRF token"
    return match.group(1)


def _api_alerts(client: Any, world: Any, tenant: str = "acme") -> list[dict[str, Any]]:
    return client.get("/api/v1/alerts", headers=world.h(tenant)).json()["items"]


def _by_rule(client: Any, world: Any) -> dict[str, dict[str, Any]]:
    return {a["rule_id"]: a for a in _api_alerts(client, world)}


def _ids(html: str) -> list[int]:
    """The alert ids a page's alert table lists, in order."""
    return [int(i) for i in re.findall(r'<a href="/alerts/(\d+)">', html)]


def _escaped(html: str) -> None:
    """The hostile user name is on the page as text, never as markup."""
    assert HOSTILE not in html
    assert re.search(r"<script(?! src=\"/static/vm\.js\">)", html) is None


def test_alert_list_filters_and_pages(client: Any, world: Any) -> None:
    _ingest(client, world, _attack())
    alerts = _by_rule(client, world)
    assert set(alerts) == {"ssh-password-guessing", "ssh-login-after-failures", "persistence",
                           "reverse-shell"}
    _login(client)
    page = client.get("/alerts")
    assert page.status_code == 200
    assert _ids(page.text) == sorted((a["id"] for a in alerts.values()), reverse=True)
    assert ('<a class="tech" href="https://attack.mitre.org/techniques/T1110/001/" '
            'target="_blank" rel="noopener noreferrer" title="Brute Force: Password Guessing">'
            "T1110.001</a>") in page.text
    assert '<span class="badge badge-medium">medium</span>' in page.text
    assert "5 failed SSH logins from 198.51.100.7" in page.text  # the reason
    assert re.search(r'<time datetime="\d{4}-\d\d-\d\dT[\d:.]+\+00:00">', page.text)
    assert f'<a href="/vms/{world.sensors["acme"]["vm_id"]}">vm-acme</a>' in page.text

    def listed(**params: Any) -> set[str]:
        r = client.get("/alerts", params=params)
        assert r.status_code == 200, r.text
        return {rule for rule, a in alerts.items() if a["id"] in _ids(r.text)}

    assert listed(severity="medium") == {"ssh-password-guessing"}
    assert listed(severity="critical") == set()
    assert listed(technique="T1110") == {"ssh-password-guessing"}  # sub-techniques too
    assert listed(technique="t1098.004") == {"persistence"}
    assert listed(technique="T1571") == {"reverse-shell"}
    assert listed(status="open") == set(alerts)
    assert listed(status="closed") == set()
    assert listed(vm_id=world.sensors["acme"]["vm_id"]) == set(alerts)
    assert listed(vm_id=world.sensors["globex"]["vm_id"]) == set()
    assert listed(since=_t(3600)[:16]) == set(alerts)
    assert listed(since=_t(-3600)[:10] + "T23:59") == set()
    assert listed(severity="", technique="", vm_id="", status="", since="") == set(alerts)
    assert "No alerts match these filters." in client.get("/alerts?status=closed").text

    bad = client.get("/alerts", params={"technique": "T1%<b>"})
    assert bad.status_code == 422 and "technique must look like" in bad.text
    assert "<b>" not in bad.text and "T1%&lt;b&gt;" in bad.text  # message and form escaped
    assert client.get("/alerts", params={"severity": "urgent"}).status_code == 422
    assert client.get("/alerts", params={"since": "yesterday"}).status_code == 422
    assert client.get("/alerts", params={"cursor": "!!"}).status_code == 422

    # one alert a page: the next-page links walk every alert once, newest first, filters kept
    seen: list[int] = []
    url: str | None = "/alerts?status=open&limit=1"
    while url:
        r = client.get(url)
        assert r.status_code == 200
        seen += _ids(r.text)
        nxt = re.search(r'<a href="([^"]+)" rel="next">', r.text)
        url = nxt.group(1).replace("&amp;", "&") if nxt else None
        if url:
            assert "status=open" in url and "limit=1" in url and "cursor=" in url
    assert seen == sorted((a["id"] for a in alerts.values()), reverse=True)


def test_alert_detail_shows_rule_techniques_and_evidence(client: Any, world: Any) -> None:
    _ingest(client, world, _attack())
    alerts = _by_rule(client, world)
    _login(client)

    login = client.get(f"/alerts/{alerts['ssh-login-after-failures']['id']}")
    assert login.status_code == 200
    text = login.text
    assert "SSH login after repeated failures" in text
    assert "the guessing worked and the attacker holds a valid account" in text  # rule catalogue
    assert "ssh-login-after-failures" in text and "Valid Accounts" in text
    assert "Initial Access" in text and "IA-2" in text and "AC-7" in text
    assert f"<dd>{ATTACKER}</dd>" in text
    assert f'href="/incidents/{alerts["ssh-login-after-failures"]["incident_id"]}"' in text
    # the failed logins and the login itself, with their messages
    assert text.count("ssh_login_failed") == 6 and "ssh_login_success" in text
    assert f"Accepted password for &lt;script&gt;alert(1)&lt;/script&gt; from {ATTACKER}" in text
    assert 'href="https://attack.mitre.org/techniques/T1078/"' in text

    shell = client.get(f"/alerts/{alerts['reverse-shell']['id']}").text
    for shown in ("4242", "bash -i", "/usr/bin/bash", "deploy", SHELL_SHA, f"{C2}:4444",
                  "Non-Standard Port", "Command and Control", "stdio-socket"):
        assert shown in shell, shown

    key = client.get(f"/alerts/{alerts['persistence']['id']}").text
    assert "/root/.ssh/authorized_keys" in key and KEY_SHA in key
    assert '<pre class="block">+ssh-ed25519 AAAAC3Nz &lt;script&gt;alert(1)&lt;/script&gt;</pre>' in key
    assert "Account Manipulation: SSH Authorized Keys" in key

    assert client.get("/alerts/999999").status_code == 404


def test_incident_pages(client: Any, world: Any) -> None:
    _ingest(client, world, _attack())
    (incident,) = client.get("/api/v1/incidents", headers=world.h("acme")).json()["items"]
    _login(client)
    listing = client.get("/incidents")
    assert listing.status_code == 200
    assert f'<a href="/incidents/{incident["id"]}">' in listing.text
    assert ("Credential Access → Initial Access → Execution → Persistence → Command and Control"
            in listing.text)  # the reverse shell's T1095 channel is command and control
    assert client.get("/incidents", params={"status": "closed"}).text.count(
        f'href="/incidents/{incident["id"]}"') == 0
    assert client.get("/incidents", params={"status": "bogus"}).status_code == 422

    page = client.get(f"/incidents/{incident['id']}")
    assert page.status_code == 200
    text = page.text
    strip = re.search(r'<ol class="killchain".*?</ol>', text, re.S).group(0)
    steps = re.findall(r'<li class="(on|off)">(?:<span class="sr-only">seen: </span>)?([^<]+)</li>',
                       strip)
    names = [name for _, name in steps]
    assert names[:7] == ["Credential Access", "Initial Access", "Execution",
                         "Privilege Escalation", "Persistence", "Defense Evasion", "Discovery"]
    assert names[-1] == "Command and Control"
    assert [name for on, name in steps if on == "on"] == [
        "Credential Access", "Initial Access", "Execution", "Persistence", "Command and Control"]
    assert f"{ATTACKER}, {C2}" in text or f"{C2}, {ATTACKER}" in text
    assert "<dt>Alerts</dt><dd>4</dd>" in text
    for tid in ("T1110.001", "T1078", "T1098.004", "T1059.004", "T1571"):
        assert f">{tid}</a>" in text
    # the timeline: alerts and the events they cite, in time order, with the messages
    timeline = re.search(r'<table class="grid timeline stack">.*?</table>', text, re.S).group(0)
    assert timeline.count('class="tl-alert"') == 4
    assert timeline.count('class="tl-event"') == 8
    times = re.findall(r'<td data-label="When \(UTC\)"><time datetime="([^"]+)"', timeline)
    assert len(times) == 12
    assert [datetime.fromisoformat(t) for t in times] == sorted(
        datetime.fromisoformat(t) for t in times)
    assert f"Failed password for &lt;script&gt;alert(1)&lt;/script&gt; from {ATTACKER}" in timeline
    assert "file created: /root/.ssh/authorized_keys" in timeline
    assert client.get("/incidents/999999").status_code == 404


def test_status_forms_need_csrf_change_status_and_are_audited(client: Any, world: Any) -> None:
    _ingest(client, world, _attack())
    alert = _by_rule(client, world)["ssh-password-guessing"]
    _login(client)
    page = client.get(f"/alerts/{alert['id']}")
    csrf = _csrf(page.text)
    assert f'action="/alerts/{alert["id"]}/status"' in page.text
    url = f"/alerts/{alert['id']}/status"
    assert client.post(url, data={"status": "acknowledged"}).status_code == 403
    assert client.post(url, data={"status": "acknowledged", "csrf": "forged"}).status_code == 403
    assert client.post(url, data={"status": "deleted", "csrf": csrf}).status_code == 422
    assert client.get(f"/api/v1/alerts/{alert['id']}", headers=world.h("acme")).json()[
        "status"] == "open"
    r = client.post(url, data={"status": "acknowledged", "csrf": csrf}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/alerts/{alert['id']}"
    assert '<span class="badge badge-acknowledged">acknowledged</span>' in client.get(
        f"/alerts/{alert['id']}").text
    assert client.get(f"/api/v1/alerts/{alert['id']}", headers=world.h("acme")).json()[
        "status"] == "acknowledged"
    r = client.post(url, data={"status": "false_positive", "csrf": csrf}, follow_redirects=False)
    assert r.status_code == 303
    assert alert["id"] in _ids(client.get("/alerts?status=false_positive").text)

    inc_url = f"/incidents/{alert['incident_id']}/status"
    assert client.post(inc_url, data={"status": "closed"}).status_code == 403
    for status in ("investigating", "contained", "closed"):
        r = client.post(inc_url, data={"status": status, "csrf": csrf}, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == f"/incidents/{alert['incident_id']}"
    incident = client.get(f"/api/v1/incidents/{alert['incident_id']}", headers=world.h("acme"))
    assert incident.json()["status"] == "closed" and incident.json()["closed_at"]
    assert "No open incidents." in client.get("/").text

    records = client.get("/api/v1/audit?limit=200", headers=world.h("admin")).json()["items"]
    changes = [(r["action"], r["target_id"], r["detail"]) for r in records
               if r["action"] in ("alert.status", "incident.status")
               and r["actor"] == "ops@acme.example" and r["outcome"] == "success"]
    assert changes == [  # newest first; the refused attempts changed nothing
        ("incident.status", str(alert["incident_id"]), {"from": "contained", "to": "closed"}),
        ("incident.status", str(alert["incident_id"]), {"from": "investigating",
                                                         "to": "contained"}),
        ("incident.status", str(alert["incident_id"]), {"from": "open", "to": "investigating"}),
        ("alert.status", str(alert["id"]), {"from": "acknowledged", "to": "false_positive"}),
        ("alert.status", str(alert["id"]), {"from": "open", "to": "acknowledged"}),
    ]


def test_a_viewer_sees_but_may_not_change(client: Any, world: Any) -> None:
    from vigil.server.services import auth
    from vigil.server.services.audit import SYSTEM

    with world.db.write() as s:
        auth.create_user(s, email="eyes@acme.example", password="viewer-pass-1", role="viewer",
                         tenant="acme", actor=SYSTEM)
    _ingest(client, world, _attack())
    alert = _by_rule(client, world)["persistence"]
    _login(client, "eyes@acme.example", "viewer-pass-1")
    page = client.get(f"/alerts/{alert['id']}")
    assert page.status_code == 200 and "Your role may not change the status." in page.text
    assert 'action="/alerts/' not in page.text
    r = client.post(f"/alerts/{alert['id']}/status",
                    data={"status": "closed", "csrf": _csrf(page.text)})
    assert r.status_code == 403
    assert client.get(f"/api/v1/alerts/{alert['id']}", headers=world.h("acme")).json()[
        "status"] == "open"


def test_another_tenant_sees_none_of_it(client: Any, world: Any) -> None:
    _ingest(client, world, _attack())
    alerts = _by_rule(client, world)
    incident_id = alerts["persistence"]["incident_id"]
    _login(client, "ops@globex.example")
    assert _ids(client.get("/alerts").text) == []
    acme_vm = world.sensors["acme"]["vm_id"]
    assert _ids(client.get("/alerts", params={"vm_id": acme_vm}).text) == []
    assert "vm-acme" not in client.get("/alerts").text  # not even in the VM filter
    assert f"/incidents/{incident_id}" not in client.get("/incidents").text
    for a in alerts.values():
        assert client.get(f"/alerts/{a['id']}").status_code == 404
    assert client.get(f"/incidents/{incident_id}").status_code == 404
    dashboard = client.get("/").text
    assert "No open incidents." in dashboard and "No alerts." in dashboard
    csrf = _csrf(dashboard)
    # a valid session and CSRF token of globex cannot touch acme's records either
    r = client.post(f"/alerts/{alerts['persistence']['id']}/status",
                    data={"status": "closed", "csrf": csrf})
    assert r.status_code == 404
    r = client.post(f"/incidents/{incident_id}/status", data={"status": "closed", "csrf": csrf})
    assert r.status_code == 404
    assert _by_rule(client, world)["persistence"]["status"] == "open"


def test_dashboard_and_vm_page_show_alerts(client: Any, world: Any) -> None:
    _ingest(client, world, _attack())
    alerts = _by_rule(client, world)
    _login(client)
    dashboard = client.get("/").text
    counts = dict(re.findall(
        r'<a href="/alerts\?severity=(\w+)&amp;status=open">.*?<span class="num">(\d+)</span>',
        dashboard))
    assert counts == {"critical": "0", "high": "3", "medium": "1", "low": "0", "info": "0"}
    incident_id = alerts["persistence"]["incident_id"]
    assert f'<a href="/incidents/{incident_id}">' in dashboard
    assert '<a href="/alerts">Alerts</a>' in dashboard
    assert '<a href="/incidents">Incidents</a>' in dashboard
    vm = world.sensors["acme"]["vm_id"]
    page = client.get(f"/vms/{vm}").text
    assert "Recent alerts" in page
    assert set(_ids(page)) == {a["id"] for a in alerts.values()}
    assert f'href="/alerts?vm_id={vm}"' in page


def test_hostile_values_are_escaped_on_every_page(client: Any, world: Any) -> None:
    _ingest(client, world, _attack())
    alerts = _by_rule(client, world)
    incident_id = alerts["persistence"]["incident_id"]
    _login(client)
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"
    pages = {
        "/": False, "/alerts": True, "/incidents": False, f"/incidents/{incident_id}": True,
        f"/vms/{world.sensors['acme']['vm_id']}": True,
        f"/alerts/{alerts['ssh-login-after-failures']['id']}": True,
        f"/alerts/{alerts['ssh-password-guessing']['id']}": True,
        f"/alerts/{alerts['persistence']['id']}": True,
        f"/alerts/{alerts['reverse-shell']['id']}": False,
        "/alerts?technique=" + HOSTILE: False,
    }
    for path, shows_it in pages.items():
        r = client.get(path)
        assert r.status_code in (200, 422), path
        _escaped(r.text)
        if shows_it:
            assert escaped in r.text, path
