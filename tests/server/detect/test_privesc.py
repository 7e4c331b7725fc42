"""Rule privilege-escalation."""

from __future__ import annotations

from tests.server.detect.helpers import T0, MemoryContext, facts, proc, run

from vigil.server.detect.base import Change, Facts
from vigil.server.detect.rules.privesc import PrivilegeEscalationRule


def test_setuid_shell_under_a_user_shell() -> None:
    user_shell = proc(10, "bash", uid=1000)
    rootsh = proc(11, "rootsh", ppid=10, uid=1000, euid=0, exe="/tmp/x/rootsh",
                  parent_name="bash", parent_uid=1000)
    found = run(PrivilegeEscalationRule(), facts(processes=[rootsh]),
                MemoryContext(processes=[user_shell, rootsh]))
    assert len(found) == 1 and found[0].evidence["process"]["euid"] == 0


def test_sudo_su_pkexec_and_known_setuid_are_fine() -> None:
    items = [
        proc(21, "bash", ppid=20, uid=0, parent_name="sudo", parent_uid=1000, parent_exe="/usr/bin/sudo"),
        proc(22, "bash", ppid=20, uid=0, parent_name="su", parent_uid=1000),
        proc(23, "passwd", uid=1000, euid=0, exe="/usr/bin/passwd", parent_name="bash", parent_uid=1000),
        proc(24, "cron", uid=0, parent_name="cron", parent_uid=0),
        proc(25, "bash", uid=1000, parent_name="sshd", parent_uid=0),
    ]
    assert run(PrivilegeEscalationRule(), facts(processes=items)) == []


def test_parent_looked_up_when_the_sensor_did_not_say() -> None:
    parent = proc(30, "exploit", uid=1000, exe="/home/u/exploit")
    child = proc(31, "sh", ppid=30, uid=0)
    found = run(PrivilegeEscalationRule(), facts(processes=[child]),
                MemoryContext(processes=[parent, child]))
    assert found and found[0].evidence["parent"]["name"] == "exploit"


def test_running_process_turning_root() -> None:
    before = proc(40, "python3", uid=1000)
    after = {**before, "uid": 0, "euid": 0}
    f = Facts(vm_id=1, tenant_id=1, sensor_id="s",
              changes={"processes": [Change(item=after, old=before, taken_at=T0)]})
    found = run(PrivilegeEscalationRule(), f)
    assert found and found[0].evidence["previous"]["uid"] == 1000
