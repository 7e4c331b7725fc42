"""Following auth logs: real OpenSSH/sudo/su/shadow-utils lines, offsets, rotation, truncation."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import pytest

from vigil.sensor.guest.collectors import CollectorContext
from vigil.sensor.guest.collectors.authlog import AuthLogCollector
from vigil.sensor.guest.collectors.authparse import AuthLogParser, parse_timestamp
from vigil.sensor.guest.state import StateDir

SSH_LINES = [
    "2026-11-27T20:00:00.123456+00:00 vm sshd[1201]: Failed password for root from 203.0.113.7 "
    "port 52144 ssh2",
    "2026-11-27T20:00:01.000000+00:00 vm sshd[1202]: Invalid user admin from 203.0.113.7 port 52146",
    "2026-11-27T20:00:01.500000+00:00 vm sshd[1202]: Failed password for invalid user admin from "
    "203.0.113.7 port 52146 ssh2",
    "2026-11-27T20:00:02.000000+00:00 vm sshd[1203]: Accepted password for alice from "
    "198.51.100.4 port 40000 ssh2",
    "2026-11-27T20:00:03.000000+00:00 vm sshd[1204]: Accepted publickey for bob from 2001:db8::5 "
    "port 40001 ssh2: ED25519 SHA256:Qm9iJ3Mga2V5IGZpbmdlcnByaW50",
    "2026-11-27T20:00:04.000000+00:00 vm sshd[1205]: Connection closed by authenticating user "
    "root 203.0.113.7 port 52150 [preauth]",
    "2026-11-27T20:00:05.000000+00:00 vm sshd[1206]: error: maximum authentication attempts "
    "exceeded for root from 203.0.113.7 port 52152 ssh2 [preauth]",
    "2026-11-27T20:00:06.000000+00:00 vm sshd[1206]: Received disconnect from 203.0.113.7 port "
    "52152:11: Bye Bye [preauth]",
    "2026-11-27T20:00:07.000000+00:00 vm CRON[1300]: pam_unix(cron:session): session opened for "
    "user root(uid=0) by (uid=0)",
]


@pytest.fixture
def log_file(tmp_path):
    return tmp_path / "auth.log"


def _collector(tmp_path, log_file) -> AuthLogCollector:
    state = StateDir(tmp_path / "state")
    state.ensure()
    context = CollectorContext(state=state, extra_logs=[str(log_file)], auth_logs=(), use_journal=False)
    return AuthLogCollector(context)


def _append(path, *lines: str) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        for line in lines:
            handle.write(line + "\n")


def _collect(collector: AuthLogCollector) -> list[dict]:
    events = collector.collect()
    collector.commit()
    return events


def test_openssh_lines_become_events(tmp_path, log_file):
    _append(log_file, *SSH_LINES)
    events = _collect(_collector(tmp_path, log_file))
    assert [e["kind"] for e in events] == [
        "ssh_login_failed",
        "ssh_invalid_user",
        "ssh_login_failed",
        "ssh_login_success",
        "ssh_login_success",
        "auth_other",
        "auth_other",
        "auth_other",
    ]  # the CRON line is not from an authentication program: ignored
    failed, invalid, failed_invalid, password, publickey, closed, maxed, bye = events
    assert (failed["user"], failed["src_ip"], failed["pid"]) == ("root", "203.0.113.7", 1201)
    assert failed["data"]["port"] == 52144 and failed["data"]["method"] == "password"
    assert failed["observed_at"] == "2026-11-27T20:00:00.123456+00:00"
    assert failed["source"] == str(log_file)
    assert failed["message"] == SSH_LINES[0]
    assert (invalid["user"], invalid["src_ip"]) == ("admin", "203.0.113.7")
    assert failed_invalid["data"]["invalid_user"] is True and failed_invalid["user"] == "admin"
    assert (password["user"], password["src_ip"], password["data"]["method"]) == (
        "alice",
        "198.51.100.4",
        "password",
    )
    assert publickey["src_ip"] == "2001:db8::5" and publickey["data"]["method"] == "publickey"
    assert publickey["data"]["key"].startswith("ED25519 SHA256:")
    assert (closed["user"], closed["src_ip"]) == ("root", "203.0.113.7")
    assert closed["data"]["reason"] == "connection_closed_preauth"
    assert maxed["data"]["reason"] == "max_auth_tries_exceeded" and maxed["user"] == "root"
    assert bye["src_ip"] == "203.0.113.7"
    assert len({e["id"] for e in events}) == len(events)


def test_sudo_su_and_shadow_utils_lines(tmp_path, log_file):
    now = datetime.now(UTC)
    stamp = (now - timedelta(minutes=5)).astimezone().strftime("%b %e %H:%M:%S")
    lines = [
        f"{stamp} vm sudo:    alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/usr/bin/id -u",
        f"{stamp} vm sudo:    mallory : 3 incorrect password attempts ; TTY=pts/1 ; "
        "PWD=/tmp ; USER=root ; COMMAND=/bin/bash",
        f"{stamp} vm sudo:    eve : user NOT in sudoers ; TTY=pts/2 ; PWD=/tmp ; USER=root ; COMMAND=/bin/sh",
        f"{stamp} vm sudo: pam_unix(sudo:session): session opened for user root(uid=0) by alice(uid=1000)",
        f"{stamp} vm su[2001]: (to root) alice on pts/0",
        f"{stamp} vm su[2002]: FAILED SU (to root) mallory on pts/1",
        f"{stamp} vm useradd[2100]: new group: name=backdoor, GID=1001",
        f"{stamp} vm useradd[2100]: new user: name=backdoor, UID=1001, GID=1001, "
        "home=/home/backdoor, shell=/bin/bash, from=/dev/pts/0",
        f"{stamp} vm usermod[2101]: add 'backdoor' to group 'sudo'",
        f"{stamp} vm usermod[2101]: add 'backdoor' to shadow group 'sudo'",
        f"{stamp} vm passwd[2102]: pam_unix(passwd:chauthtok): password changed for backdoor",
        f"{stamp} vm passwd[2102]: password for 'backdoor' changed by 'root'",
        f"{stamp} vm chpasswd[2103]: pam_unix(chpasswd:chauthtok): password changed for alice",
        f"{stamp} vm groupadd[2104]: group added to /etc/group: name=ops, GID=1002",
        f"{stamp} vm groupadd[2104]: new group: name=ops, GID=1002",
        f"{stamp} vm groupdel[2105]: group 'ops' removed",
        f"{stamp} vm userdel[2106]: delete user 'backdoor'",
        f"{stamp} vm systemd-logind[400]: New session 7 of user alice.",
        f"{stamp} vm kernel: [ 1.0] some kernel line",
    ]
    _append(log_file, *lines)
    events = _collect(_collector(tmp_path, log_file))
    kinds = [(e["kind"], e["user"]) for e in events]
    assert kinds == [
        ("sudo_command", "alice"),
        ("sudo_failed", "mallory"),
        ("sudo_failed", "eve"),
        ("auth_other", "root"),
        ("su_session", "root"),
        ("su_failed", "root"),
        ("group_changed", None),
        ("user_added", "backdoor"),
        ("user_modified", "backdoor"),
        ("auth_other", None),
        ("password_changed", "backdoor"),
        ("auth_other", "backdoor"),  # the same change's second line counts once
        ("password_changed", "alice"),
        ("auth_other", None),
        ("group_changed", None),
        ("group_changed", None),
        ("user_deleted", "backdoor"),
        ("auth_other", "alice"),
    ]
    sudo = events[0]
    assert sudo["data"]["target_user"] == "root"
    assert sudo["data"]["command"] == "/usr/bin/id -u"
    assert sudo["data"]["tty"] == "pts/0"
    assert events[1]["data"]["reason"] == "3 incorrect password attempts"
    assert events[4]["data"]["by"] == "alice" and events[5]["data"]["by"] == "mallory"
    assert events[6]["data"]["group"] == "backdoor" and events[6]["data"]["change"] == "added"
    assert events[7]["data"]["uid"] == 1001 and events[7]["data"]["shell"] == "/bin/bash"
    assert events[8]["data"]["group"] == "sudo"
    # classic syslog time: this year, local time, stored as UTC
    expected = (now - timedelta(minutes=5)).replace(microsecond=0)
    assert datetime.fromisoformat(sudo["observed_at"]) == expected


def test_classic_timestamp_rolls_back_a_year_when_in_the_future():
    now = datetime(2027, 1, 2, 12, 0, tzinfo=UTC)
    value = parse_timestamp("Dec 31 23:00:00", now=now)
    assert value.year == 2026
    assert parse_timestamp("2026-11-27T20:00:00Z") == datetime(2026, 11, 27, 20, tzinfo=UTC)


def test_offsets_survive_a_restart_and_nothing_is_resent(tmp_path, log_file):
    _append(log_file, *SSH_LINES[:3])
    first = _collector(tmp_path, log_file)
    assert len(_collect(first)) == 3
    assert _collect(first) == []
    _append(log_file, SSH_LINES[3])
    second = _collector(tmp_path, log_file)  # a restarted sensor, same state dir
    events = _collect(second)
    assert [e["kind"] for e in events] == ["ssh_login_success"]


def test_uncommitted_lines_are_read_again_with_the_same_ids(tmp_path, log_file):
    _append(log_file, *SSH_LINES[:2])
    crashed = _collector(tmp_path, log_file)
    before = crashed.collect()  # the sensor dies before spooling and committing
    again = _collect(_collector(tmp_path, log_file))
    assert [e["id"] for e in again] == [e["id"] for e in before]


def test_partial_lines_wait_until_finished(tmp_path, log_file):
    collector = _collector(tmp_path, log_file)
    with open(log_file, "w") as handle:
        handle.write(SSH_LINES[0][:40])
    assert _collect(collector) == []
    with open(log_file, "a") as handle:
        handle.write(SSH_LINES[0][40:] + "\n")
    assert [e["kind"] for e in _collect(collector)] == ["ssh_login_failed"]


def test_rotation_reads_the_rest_of_the_old_file_then_the_new_one(tmp_path, log_file):
    collector = _collector(tmp_path, log_file)
    _append(log_file, SSH_LINES[0])
    assert len(_collect(collector)) == 1
    _append(log_file, SSH_LINES[1])  # written just before logrotate moved the file
    os.rename(log_file, f"{log_file}.1")
    _append(log_file, SSH_LINES[3])
    events = _collect(collector)
    assert [e["kind"] for e in events] == ["ssh_invalid_user", "ssh_login_success"]
    # and again while the sensor is down: dateext naming this time
    _append(log_file, SSH_LINES[2])
    os.rename(log_file, f"{log_file}-20261128")
    _append(log_file, SSH_LINES[4])
    events = _collect(_collector(tmp_path, log_file))
    assert [e["kind"] for e in events] == ["ssh_login_failed", "ssh_login_success"]


def test_truncation_starts_again_from_the_top(tmp_path, log_file):
    collector = _collector(tmp_path, log_file)
    _append(log_file, *SSH_LINES[:4])
    assert len(_collect(collector)) == 4
    with open(log_file, "w") as handle:
        handle.write(SSH_LINES[5] + "\n")
    events = _collect(collector)
    assert [e["kind"] for e in events] == ["auth_other"]


def test_a_first_look_at_a_big_file_reads_only_its_end(tmp_path, log_file, monkeypatch):
    import vigil.sensor.guest.collectors.authlog as authlog

    monkeypatch.setattr(authlog, "INITIAL_BACKLOG", 600)
    _append(log_file, *(SSH_LINES[0] for _ in range(50)), SSH_LINES[3])
    events = _collect(_collector(tmp_path, log_file))
    assert 1 < len(events) < 10
    assert events[-1]["kind"] == "ssh_login_success"


def test_repeated_messages_and_journal_entries():
    parser = AuthLogParser()
    repeated = (
        "2026-11-27T20:00:00+00:00 vm sshd[9]: message repeated 3 times: [ Failed password for "
        "root from 203.0.113.9 port 2222 ssh2]"
    )
    events = parser.parse_line(repeated, source="test", seed="x")
    assert [e["kind"] for e in events] == ["ssh_login_failed"] * 3
    assert len({e["id"] for e in events}) == 3
    entry = {
        "__CURSOR": "s=abc;i=1",
        "__REALTIME_TIMESTAMP": "1795809600123456",
        "_HOSTNAME": "vm",
        "SYSLOG_IDENTIFIER": "sshd",
        "_PID": "77",
        "MESSAGE": "Invalid user oracle from 192.0.2.10 port 41000",
    }
    (event,) = parser.parse_journal_entry(entry)
    assert (event["kind"], event["user"], event["src_ip"], event["pid"]) == (
        "ssh_invalid_user",
        "oracle",
        "192.0.2.10",
        77,
    )
    assert event["source"] == "journal"
    assert parser.parse_journal_entry(entry)[0]["id"] == event["id"]
    binary = dict(entry, MESSAGE=list(b"Accepted password for root from 192.0.2.11 port 1 ssh2"))
    assert parser.parse_journal_entry(binary)[0]["kind"] == "ssh_login_success"
    assert parser.parse_journal_entry(dict(entry, SYSLOG_IDENTIFIER="nginx")) == []


def test_header_less_lines_of_sshd_minus_e(tmp_path, log_file):
    """``sshd -E FILE`` writes bare messages; only what is surely OpenSSH's is taken."""
    _append(
        log_file,
        "Server listening on 127.0.0.1 port 2222.",
        "Invalid user scanner from 192.0.2.50 port 36534",
        "Could not get shadow information for NOUSER",
        "Failed password for invalid user scanner from 192.0.2.50 port 36534 ssh2",
        "sudo[77]: pam_unix(sudo:session): session closed for user root",
        "some other program's line",
    )
    before = datetime.now(UTC)
    events = _collect(_collector(tmp_path, log_file))
    assert [(e["kind"], e["user"], e["src_ip"]) for e in events] == [
        ("ssh_invalid_user", "scanner", "192.0.2.50"),
        ("ssh_login_failed", "scanner", "192.0.2.50"),
        ("auth_other", "root", None),
    ]
    assert datetime.fromisoformat(events[0]["observed_at"]) >= before - timedelta(seconds=1)
    assert events[2]["pid"] == 77
