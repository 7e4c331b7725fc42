"""Rules log-clearing and history-disabled."""

from __future__ import annotations

from tests.server.detect.helpers import event, facts, proc, run

from vigil.server.detect.rules.log_clearing import HistoryDisabledRule, LogClearingRule


def test_logs_and_histories_map_to_their_techniques() -> None:
    events = [
        event("log_truncated", path="/var/log/auth.log", data={"watched": "log", "old_size": 9000,
                                                              "new_size": 0}),
        event("log_deleted", path="/var/log/wtmp", data={"watched": "log"}),
        event("log_linked_devnull", path="/root/.bash_history", data={"watched": "history"}),
        event("log_truncated", path="/var/log/journal", data={"watched": "journal"}),
        event("log_rotated", path="/var/log/syslog", data={"watched": "log"}),
    ]
    found = run(LogClearingRule(), facts(events=events))
    assert [(f.techniques, f.evidence["what"]) for f in found] == [
        (("T1070.002",), "log"), (("T1070.002",), "log"), (("T1070.003",), "shell history"),
        (("T1070.002",), "journal")]
    assert found[0].evidence["old_size"] == 9000


def test_history_disabled_by_environment_or_command() -> None:
    items = [
        proc(1, "bash", env={"HISTFILE": "/dev/null"}),
        proc(2, "sleep", env={"HISTSIZE": "0"}),
        proc(3, "bash", cmdline=["bash", "-c", "unset HISTFILE; id"]),
        proc(4, "bash", cmdline=["bash", "-c", "set +o history"]),
        proc(5, "bash", env={"HISTFILE": "/home/u/.bash_history"}),
        proc(6, "grep", cmdline=["grep", "HISTFILE", "/etc/profile"]),
    ]
    found = run(HistoryDisabledRule(), facts(processes=items))
    assert [f.evidence["process"]["pid"] for f in found] == [1, 2, 3, 4]
