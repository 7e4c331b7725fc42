"""Log integrity: truncation, deletion, replacement, rotation and /dev/null links."""

from __future__ import annotations

import os
import shutil

import pytest

from vigil.sensor.guest.collectors import CollectorContext
from vigil.sensor.guest.collectors.logintegrity import LogIntegrityCollector
from vigil.sensor.guest.state import StateDir

LOGS = ("auth.log", "syslog", "kern.log", "messages", "wtmp")


@pytest.fixture
def machine(tmp_path):
    logs = tmp_path / "log"
    logs.mkdir()
    for name in LOGS:
        (logs / name).write_bytes(b"x" * 4000 + b"\n")
    journal = logs / "journal/0123456789abcdef"
    journal.mkdir(parents=True)
    for index in range(4):
        (journal / f"system@{index}.journal").write_bytes(b"j" * 400_000)
    home = tmp_path / "home/alice"
    home.mkdir(parents=True)
    (home / ".bash_history").write_text("ls\n" * 500)
    passwd = tmp_path / "passwd"
    passwd.write_text(f"alice:x:1000:1000::{home}:/bin/bash\n")
    return logs, home, passwd


def _collector(tmp_path, machine) -> LogIntegrityCollector:
    logs, _, passwd = machine
    state = StateDir(tmp_path / "state")
    state.ensure()
    context = CollectorContext(
        state=state,
        passwd_path=str(passwd),
        integrity_logs=[str(logs / name) for name in LOGS],
        journal_dir=str(logs / "journal"),
    )
    return LogIntegrityCollector(context)


def _collect(collector):
    events = collector.collect()
    collector.commit()
    return [(e["kind"], e["path"]) for e in events], events


def test_tampering_is_told_apart_from_rotation(tmp_path, machine):
    logs, home, _ = machine
    collector = _collector(tmp_path, machine)
    assert _collect(collector)[0] == []  # the baseline

    with open(logs / "auth.log", "r+b") as handle:
        handle.truncate(100)
    kinds, events = _collect(collector)
    assert kinds == [("log_truncated", str(logs / "auth.log"))]
    assert (events[0]["data"]["old_size"], events[0]["data"]["new_size"]) == (4001, 100)

    (logs / "syslog").unlink()
    assert _collect(collector)[0] == [("log_deleted", str(logs / "syslog"))]

    replacement = logs / "kern.log.new"
    replacement.write_text("clean\n")
    os.replace(replacement, logs / "kern.log")
    assert _collect(collector)[0] == [("log_replaced", str(logs / "kern.log"))]

    # logrotate with "create": the old inode now lives at messages.1
    os.rename(logs / "messages", logs / "messages.1")
    (logs / "messages").write_text("")
    kinds, events = _collect(collector)
    assert kinds == [("log_rotated", str(logs / "messages"))]
    assert events[0]["data"]["rotated_to"] == str(logs / "messages.1")

    # moved away but not recreated yet, with dateext naming: still a rotation, then quiet
    os.rename(logs / "messages", logs / "messages-20261128")
    assert _collect(collector)[0] == [("log_rotated", str(logs / "messages"))]
    (logs / "messages").write_text("")
    assert _collect(collector)[0] == []

    # logrotate's copytruncate
    with open(logs / "wtmp", "ab") as handle:
        handle.write(b"y" * 100)
    _collect(collector)
    shutil.copyfile(logs / "wtmp", logs / "wtmp.1")
    with open(logs / "wtmp", "r+b") as handle:
        handle.truncate(0)
    kinds, events = _collect(collector)
    assert kinds == [("log_rotated", str(logs / "wtmp"))]
    assert events[0]["data"]["method"] == "copytruncate"

    assert _collect(collector)[0] == []


def test_history_silenced_or_cleared(tmp_path, machine):
    logs, home, _ = machine
    history = home / ".bash_history"
    collector = _collector(tmp_path, machine)
    _collect(collector)

    # bash rewrites its history through a new file: no event for that
    rewritten = home / ".bash_history-01234"
    rewritten.write_text("ls\n" * 499 + "id\n")
    os.replace(rewritten, history)
    assert _collect(collector)[0] == []

    history.write_text("")
    assert _collect(collector)[0] == [("log_truncated", str(history))]

    history.unlink()
    history.symlink_to("/dev/null")
    kinds, events = _collect(collector)
    assert kinds == [("log_linked_devnull", str(history))]
    assert events[0]["data"]["link_target"] == "/dev/null"
    assert _collect(collector)[0] == []


def test_journal_vacuumed_and_baseline_across_restart(tmp_path, machine):
    logs, _, _ = machine
    _collect(_collector(tmp_path, machine))
    journal = logs / "journal/0123456789abcdef"
    for index in range(3):
        (journal / f"system@{index}.journal").unlink()
    (logs / "auth.log").unlink()
    restarted = _collector(tmp_path, machine)  # the changes happened while the sensor was down
    kinds, events = _collect(restarted)
    assert sorted(kinds) == [
        ("log_deleted", str(logs / "auth.log")),
        ("log_truncated", str(logs / "journal")),
    ]
    journal_event = next(e for e in events if e["path"] == str(logs / "journal"))
    assert journal_event["data"]["files"] == 1
    assert _collect(_collector(tmp_path, machine))[0] == []


def _journal_file(path, entries: int) -> None:
    """A journal file as journald leaves it: preallocated, its entry count in the header."""
    header = bytearray(8 * 1024 * 1024)  # journald grows files in 8 MiB steps
    header[:8] = b"LPKSHHRH"
    header[152:160] = entries.to_bytes(8, "little")
    path.write_bytes(bytes(header))


def test_journal_vacuum_is_seen_by_entries_when_sizes_stay(tmp_path, machine):
    """`journalctl --rotate --vacuum-time=1s`: the archived files go, new active files of the
    same preallocated size come; the bytes stay, the entries fall."""
    logs, _, _ = machine
    journal = logs / "journal/0123456789abcdef"
    for index in range(4):
        (journal / f"system@{index}.journal").unlink()
    _journal_file(journal / "system.journal", 1500)
    _journal_file(journal / "user-1000.journal", 300)
    collector = _collector(tmp_path, machine)
    assert _collect(collector)[0] == []
    _journal_file(journal / "system.journal", 1600)  # normal logging: no event
    assert _collect(collector)[0] == []
    (journal / "system.journal").rename(journal / "system@0001-0002.journal")
    (journal / "user-1000.journal").rename(journal / "user-1000@0001-0002.journal")
    for name in ("system@0001-0002.journal", "user-1000@0001-0002.journal"):
        (journal / name).unlink()
    _journal_file(journal / "system.journal", 3)
    _journal_file(journal / "user-1000.journal", 1)
    kinds, events = _collect(collector)
    assert kinds == [("log_truncated", str(logs / "journal"))]
    data = events[0]["data"]
    assert (data["old_entries"], data["entries"]) == (1900, 4)
    assert data["new_size"] == data["old_size"]  # what a size check alone would have missed
