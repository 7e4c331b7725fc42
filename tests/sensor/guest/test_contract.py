"""Contract: what the guest sensor produces on this machine validates against the wire models."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import uuid

import pytest

from vigil.protocol import EVENT_KINDS, SNAPSHOT_KINDS
from vigil.protocol.models import (
    EnrollRequest,
    HeartbeatRequest,
    IngestBatch,
    ResourceUsage,
    TaskResult,
)
from vigil.sensor.guest.agent import GuestSensor, SensorConfig
from vigil.sensor.guest.collectors import CollectorContext, create_collectors
from vigil.sensor.guest.collectors.logintegrity import LogIntegrityCollector
from vigil.sensor.guest.collectors.persistence import PersistenceCollector
from vigil.sensor.guest.collectors.services import parse_list_units
from vigil.sensor.guest.decoys import Decoys, DecoySettings
from vigil.sensor.guest.diff import SnapshotDiffer
from vigil.sensor.guest.events import make_event
from vigil.sensor.guest.hostinfo import enroll_request
from vigil.sensor.guest.spool import Spool, build_batch
from vigil.sensor.guest.state import StateDir
from vigil.sensor.guest.util import utc_now

AUTH_LINES = [
    *(
        f"2026-11-27T20:00:{n:02d}+00:00 vm {line}"
        for n, line in enumerate(
            [
                "sshd[1]: Failed password for root from 203.0.113.7 port 1 ssh2",
                "sshd[2]: Invalid user admin from 203.0.113.7 port 2",
                "sshd[3]: Accepted publickey for bob from 2001:db8::5 port 3 ssh2: RSA SHA256:k",
                "sshd[4]: Connection closed by authenticating user root 203.0.113.7 port 4 [preauth]",
                "sudo:    alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/usr/bin/id",
                "sudo:    eve : user NOT in sudoers ; TTY=pts/2 ; PWD=/tmp ; USER=root ; COMMAND=/bin/sh",
                "su[5]: (to root) alice on pts/0",
                "su[6]: FAILED SU (to root) mallory on pts/1",
                "useradd[7]: new user: name=bd, UID=1001, GID=1001, home=/home/bd, shell=/bin/sh, "
                "from=/dev/pts/0",
                "userdel[8]: delete user 'bd'",
                "usermod[9]: change user 'alice' shell from '/bin/bash' to '/bin/sh'",
                "groupadd[10]: new group: name=ops, GID=1002",
                "chpasswd[11]: pam_unix(chpasswd:chauthtok): password changed for alice",
                "sshd[12]: Failed password for invalid user " + "x" * 300 + " from ::1 port 5 ssh2",
            ]
        )
    )
]


def _machine_events(tmp_path) -> list[dict]:
    """Persistence and log-integrity events from real file changes under tmp_path."""
    state = StateDir(tmp_path / "fstate")
    state.ensure()
    home = tmp_path / "home"
    home.mkdir()
    passwd = tmp_path / "passwd"
    passwd.write_text(f"u:x:1000:1000::{home}:/bin/sh\n")
    cron = tmp_path / "cron.d"
    cron.mkdir()
    logs = [tmp_path / name for name in ("a.log", "b.log", "c.log", "d.log")]
    for path in logs:
        path.write_text("line\n" * 100)
    context = CollectorContext(
        state=state,
        passwd_path=str(passwd),
        persistence_paths=[str(cron)],
        integrity_logs=[str(p) for p in logs],
        journal_dir=None,
    )
    collectors = [PersistenceCollector(context), LogIntegrityCollector(context)]
    events: list[dict] = []

    def step() -> None:
        for collector in collectors:
            events.extend(collector.collect())
            collector.commit()

    step()
    (cron / "job").write_text("* * * * * root /tmp/x\n")
    step()
    (cron / "job").write_text("* * * * * root /tmp/y\n")
    logs[0].write_text("")
    logs[1].unlink()
    os.replace(tmp_path / "c.log", tmp_path / "c.log.1")
    logs[2].write_text("")
    (tmp_path / "e.log").write_text("new\n")
    os.replace(tmp_path / "e.log", logs[3])
    (home / ".bash_history").symlink_to("/dev/null")
    step()
    (cron / "job").unlink()
    step()
    return events


def _decoy_events(tmp_path) -> list[dict]:
    """decoy_connection, decoy_login and canary_accessed from real clients and a real cat."""
    state = StateDir(tmp_path / "dstate")
    state.ensure()
    events: list[dict] = []
    canary = tmp_path / "canary" / "credentials"
    settings = DecoySettings(bind="127.0.0.1", ssh_port=0, http_port=0, canaries=[str(canary)])
    decoys = Decoys(settings, state, events.append)
    decoys.start()
    try:
        with socket.create_connection(("127.0.0.1", decoys.ports["ssh"]), timeout=5) as client:
            client.recv(256)
            client.sendall(b"SSH-2.0-libssh_0.9.6\r\n")
            client.recv(256)
        body = b"username=admin&password=admin"
        with socket.create_connection(("127.0.0.1", decoys.ports["http"]), timeout=5) as client:
            client.sendall(b"POST /login HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            while client.recv(65536):
                pass
        subprocess.run(["cat", str(canary)], stdout=subprocess.DEVNULL, check=True)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not any(e["kind"] == "canary_accessed" for e in events):
            time.sleep(0.05)
    finally:
        decoys.stop()
    return events


@pytest.fixture
def produced(tmp_path):
    state = StateDir(tmp_path / "state")
    state.ensure()
    log = tmp_path / "auth.log"
    log.write_text("\n".join(AUTH_LINES) + "\n")
    context = CollectorContext(state=state, extra_logs=[str(log)], auth_logs=())
    collectors = create_collectors(context)
    differ = SnapshotDiffer(state)
    snapshots, events, resources = {}, [], None
    for collector in collectors:
        result = collector.collect()
        events.extend(collector.take_events())
        if collector.produces == "snapshot" and result is not None:
            snapshots[collector.name] = differ.diff(collector.name, result)
        elif collector.produces == "events":
            events.extend(result)
        elif collector.produces == "resources":
            resources = collector.collect()
    if "services" not in snapshots:  # no systemd on this machine: use its output format
        sample = "ssh.service loaded active running OpenBSD Secure Shell server\n"
        snapshots["services"] = differ.diff("services", parse_list_units(sample))
    events.extend(_machine_events(tmp_path))
    events.extend(_decoy_events(tmp_path))
    collectors[0].report("a test of the error path", "nothing wrong")
    events.extend(collectors[0].take_events())
    sensor = GuestSensor(SensorConfig(server="http://127.0.0.1:9", state_dir=tmp_path / "state"))
    sensor.collectors = collectors
    events.append(sensor._started_event())
    events.append(make_event("sensor_stopping", source="sensor"))
    yield {
        "snapshots": snapshots,
        "events": events,
        "resources": resources,
        "collectors": collectors,
        "state": state,
        "sensor": sensor,
    }
    for collector in collectors:
        collector.close()  # e.g. the journalctl that authlog follows where there is no auth.log


def test_every_snapshot_and_event_validates_as_an_ingest_batch(produced, tmp_path):
    assert set(produced["snapshots"]) == set(SNAPSHOT_KINDS)
    spool = Spool(tmp_path / "spool.sqlite")
    spool.put_many([("snapshot", s) for s in produced["snapshots"].values()])
    spool.put_many([("event", e) for e in produced["events"]])
    batch = build_batch(spool.take())
    parsed = IngestBatch.model_validate(batch)
    assert len(parsed.snapshots) == len(SNAPSHOT_KINDS)
    assert len(parsed.events) == len(produced["events"])
    assert {s.kind for s in parsed.snapshots} == set(SNAPSHOT_KINDS)
    processes = next(s for s in parsed.snapshots if s.kind == "processes")
    assert any(p.pid == os.getpid() for p in processes.items)


def test_every_event_kind_is_produced_somewhere(produced):
    assert {e["kind"] for e in produced["events"]} == set(EVENT_KINDS)


def test_differential_snapshots_validate(produced):
    differ = SnapshotDiffer(None)
    for kind, snapshot in produced["snapshots"].items():
        items = snapshot["items"]
        differ.diff(kind, items)
        changed = [dict(items[0], key=items[0]["key"] + "-x")] if items else []
        snapshot = differ.diff(kind, changed)
        if snapshot is not None:
            batch = {"batch_id": str(uuid.uuid4()), "sent_at": utc_now(), "snapshots": [snapshot]}
            IngestBatch.model_validate(batch)


def test_heartbeat_enroll_and_task_result_validate(produced, tmp_path):
    ResourceUsage.model_validate(produced["resources"])
    sensor = produced["sensor"]
    sensor.spool = Spool(tmp_path / "hb.sqlite")
    HeartbeatRequest.model_validate(sensor._heartbeat_body())
    HeartbeatRequest.model_validate(sensor._heartbeat_body(shutting_down=True))
    EnrollRequest.model_validate(enroll_request("enroll-token-0123456789"))
    result = sensor.live_query()
    assert result["processes"] and isinstance(result["connections"], list)
    TaskResult.model_validate({"ok": True, "result": result})
