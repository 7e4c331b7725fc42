"""False positives: a benign workload under a real sensor raises nothing high or critical.

Correct SSH logins (password and key), a package installed and removed with dpkg (it ships a
systemd unit and a cron job, enabled the way Debian's helpers do), a Python script fetching
HTTPS from a server in a network namespace, an interactive shell over SSH with a terminal, and
an editor saving a file in /tmp.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import running_server
from tests.harness.attacker import REPO, Attacker
from tests.harness.figures import report
from tests.harness.procs import VIGIL, http, spawn, stop, wait_until
from tests.harness.sshd import SSH_OPTS, Sshd, have_sshd
from tests.harness.victim import Victim

pytestmark = pytest.mark.skipif(not have_sshd() or not shutil.which("dpkg-deb"),
                                reason="needs root, sshd, sshpass and dpkg-deb (make test)")

HTTPS_SERVER = """
import http.server, ssl, sys
server = http.server.HTTPServer(("0.0.0.0", 443), http.server.SimpleHTTPRequestHandler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(sys.argv[1], sys.argv[2])
server.socket = context.wrap_socket(server.socket, server_side=True)
print("ready", flush=True)
server.serve_forever()
"""

FETCH = """
import ssl, sys, time, urllib.request
context = ssl._create_unverified_context()
for _ in range(6):
    with urllib.request.urlopen(sys.argv[1], context=context, timeout=10) as answer:
        answer.read()
    time.sleep(0.5)
"""


def _deb(workdir: Path, name: str) -> Path:
    """A small package with a systemd unit and a daily cron job, enabled in postinst."""
    root = workdir / "pkg"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN/control").write_text(
        f"Package: {name}\nVersion: 1.0\nArchitecture: all\nMaintainer: Vigil <t@example.org>\n"
        "Description: benign test package\n")
    (root / "lib/systemd/system").mkdir(parents=True)
    (root / f"lib/systemd/system/{name}.service").write_text(
        "[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n")
    (root / "etc/cron.daily").mkdir(parents=True)
    (root / f"etc/cron.daily/{name}").write_text("#!/bin/sh\nexit 0\n")
    (root / f"etc/cron.daily/{name}").chmod(0o755)
    wants = "/etc/systemd/system/multi-user.target.wants"
    for script, body in (("postinst", f"mkdir -p {wants}\nln -sf /lib/systemd/system/{name}"
                          f".service {wants}/{name}.service\n"),
                         ("postrm", f"rm -f {wants}/{name}.service\n")):
        (root / f"DEBIAN/{script}").write_text(f"#!/bin/sh\nset -e\n{body}")
        (root / f"DEBIAN/{script}").chmod(0o755)
    deb = workdir / f"{name}.deb"
    subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(root), str(deb)], check=True,
                   capture_output=True)
    return deb


@pytest.fixture(scope="module")
def quiet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    base = tmp_path_factory.mktemp("benign")
    tag = uuid.uuid4().hex[:6]
    with Victim(tag) as user, Attacker(2) as net:
        sshd = Sshd(base / "sshd").start()
        sensor = None
        try:
            with running_server(base / "server") as srv:
                enroll = srv.vigil("token", "enroll", "--tenant", "default")
                sensor = spawn([VIGIL, "sensor", "guest", "--server", srv.url, "--enroll-token",
                                enroll, "--state-dir", str(base / "sensor"), "--log",
                                str(sshd.log), "--no-decoys"], log=base / "sensor.log")
                wait_until(lambda: _alerts(srv) is not None and _vms(srv), timeout=30,
                           what="the sensor")
                time.sleep(3)  # baselines, and the first look at what already runs here
                yield {"srv": srv, "sshd": sshd, "user": user, "net": net, "base": base,
                       "tag": tag}
        finally:
            stop(sensor)
            sshd.stop()


def _vms(srv: Any) -> list[Any]:
    status, body = http("GET", f"{srv.url}/api/v1/vms", token=srv.admin_token)
    return body["items"] if status == 200 else []


def _alerts(srv: Any) -> list[dict[str, Any]] | None:
    status, body = http("GET", f"{srv.url}/api/v1/alerts?limit=1000", token=srv.admin_token)
    return body["items"] if status == 200 else None


def test_benign_workload_raises_nothing_high(quiet: dict[str, Any]) -> None:
    srv, sshd, user, net, base = (quiet[k] for k in ("srv", "sshd", "user", "net", "base"))
    # what this machine already ran before the workload is not the workload's doing (e.g. a
    # sandbox's tool runner executing from a sealed memfd is, rightly, fileless execution)
    before = {a["id"]: (a["rule_id"], a["reason"]) for a in _alerts(srv) or []}
    # correct SSH logins, by password and by key
    for _ in range(3):
        subprocess.run(["sshpass", "-p", user.password, "ssh", *SSH_OPTS, "-p", str(sshd.port),
                        f"{user.name}@127.0.0.1", "true"], check=True, capture_output=True,
                       timeout=30)
    sshd.key_login(user.name, "uname -a")
    # an interactive shell with a terminal, typing ordinary commands
    import paramiko

    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    client.connect("127.0.0.1", port=sshd.port, username=user.name, password=user.password,
                   allow_agent=False, look_for_keys=False)
    shell = client.invoke_shell()
    shell.send(b"ls -la; cd /tmp; ps aux | head -3; echo done-typing\n")
    wait_until(lambda: b"done-typing" in shell.recv(65536), timeout=10, what="the shell")
    # package-manager activity
    name = f"vigil-benign-{quiet['tag']}"
    deb = _deb(base, name)
    try:
        subprocess.run(["dpkg", "-i", str(deb)], check=True, capture_output=True)
        time.sleep(2)
    finally:
        subprocess.run(["dpkg", "--purge", name], capture_output=True)
    assert subprocess.run(["dpkg", "-s", name], capture_output=True).returncode != 0
    # a script fetching HTTPS from a server elsewhere
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=x",
                    "-keyout", str(base / "key.pem"), "-out", str(base / "cert.pem"), "-days",
                    "1"], check=True, capture_output=True)
    (base / "https.py").write_text(HTTPS_SERVER)
    (base / "fetch.py").write_text(FETCH)
    https = subprocess.Popen(["ip", "netns", "exec", net.ns, sys.executable, str(base / "https.py"),
                              str(base / "cert.pem"), str(base / "key.pem")], cwd=base,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                             start_new_session=True)
    try:
        assert https.stdout is not None and "ready" in https.stdout.readline()
        subprocess.run([sys.executable, str(base / "fetch.py"), f"https://{net.ip}/"], check=True,
                       capture_output=True, timeout=60, cwd=REPO)
    finally:
        stop(https)  # type: ignore[arg-type]
    # an editor saving a file in /tmp
    notes = Path(f"/tmp/vigil-notes-{quiet['tag']}.txt")  # noqa: S108
    try:
        subprocess.run(["vim", "-Es", "-c", "normal ihello from vim", "-c", "wq", str(notes)],
                       check=True, capture_output=True, timeout=30)
        assert notes.read_text().startswith("hello from vim")
    finally:
        notes.unlink(missing_ok=True)
    shell.send(b"exit\n")
    client.close()
    time.sleep(8)  # more than a process interval and a fast interval: everything is in
    alerts = [a for a in _alerts(srv) or [] if a["id"] not in before]
    loud = [(a["rule_id"], a["severity"], a["reason"]) for a in alerts
            if a["severity"] in ("high", "critical")]
    assert loud == []
    quiet_ones = sorted({(a["rule_id"], a["severity"]) for a in alerts})
    report(f"benign workload: {len(alerts)} alerts, none high or critical ({quiet_ones}); "
           f"{len(before)} raised on what ran here before it: {sorted(set(before.values()))}")
