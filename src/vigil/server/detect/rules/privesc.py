"""Privilege escalation: root appearing under a user who did not ask sudo, su or pkexec."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from vigil.server.detect.base import Facts, Finding, Rule, RuleContext
from vigil.server.detect.rules._common import parse_time, process_evidence, program_names

#: parents through which a user legitimately becomes root
ELEVATORS = {"sudo", "su", "pkexec", "doas", "sudoedit", "run0", "polkitd", "polkit-agent-helper-1"}
#: setuid-root programs Debian and its relatives ship, which run as root for a user by design
KNOWN_SETUID = {
    "/usr/bin/sudo", "/usr/bin/sudoedit", "/usr/bin/su", "/bin/su", "/usr/bin/pkexec",
    "/usr/bin/passwd", "/usr/bin/chsh", "/usr/bin/chfn", "/usr/bin/newgrp", "/usr/bin/gpasswd",
    "/usr/bin/mount", "/bin/mount", "/usr/bin/umount", "/bin/umount", "/usr/bin/fusermount",
    "/usr/bin/fusermount3", "/bin/fusermount", "/usr/lib/openssh/ssh-keysign",
    "/usr/lib/dbus-1.0/dbus-daemon-launch-helper", "/usr/lib/policykit-1/polkit-agent-helper-1",
    "/usr/libexec/polkit-agent-helper-1", "/usr/sbin/unix_chkpwd", "/sbin/unix_chkpwd",
    "/usr/bin/ping", "/bin/ping", "/usr/bin/doas", "/usr/lib/xorg/Xorg.wrap", "/usr/bin/Xorg",
    "/usr/sbin/pppd", "/usr/bin/ntfs-3g", "/usr/bin/crontab", "/usr/bin/at", "/usr/bin/newuidmap",
    "/usr/bin/newgidmap", "/usr/lib/snapd/snap-confine", "/usr/sbin/mount.nfs", "/usr/bin/expiry",
    "/usr/bin/chage", "/usr/bin/wall", "/usr/bin/write", "/usr/bin/ssh-agent",
}


def _is_root(item: dict[str, Any]) -> bool:
    return item.get("uid") == 0 or item.get("euid") == 0


class PrivilegeEscalationRule(Rule):
    """A process running as root (real or effective uid 0) whose parent ran as another user and
    that came neither through sudo, su or pkexec nor from a known setuid program; or a running
    process that turned root. A misused setuid binary or a kernel exploit looks like this."""

    id = "privilege-escalation"
    title = "Privilege escalation to root"
    techniques = ("T1068",)
    tactic = "privilege-escalation"
    severity = "critical"
    controls = ("AC-6", "CM-5", "SI-4", "SI-7")
    evidence_fields = ("process", "parent", "previous")
    inputs = ("processes",)

    def evaluate(self, facts: Facts, ctx: RuleContext) -> Iterator[Finding]:
        procs: dict[int, dict[str, Any]] | None = None
        for change in facts.changes.get("processes", []):
            item = change.item
            if not _is_root(item) or item.get("exe") in KNOWN_SETUID:
                continue
            if change.old is not None and not _is_root(change.old):
                yield self._finding(item, None, change.old, ctx, "turned root while running")
                continue
            parent_uid = item.get("parent_uid")
            parent: dict[str, Any] | None = None
            if parent_uid is None:
                procs = procs if procs is not None else ctx.processes()
                parent = procs.get(item.get("ppid") or -1)
                parent_uid = parent.get("uid") if parent else None
            if parent_uid in (None, 0):
                continue
            parent_name = item.get("parent_name") or (parent or {}).get("name") or ""
            parent_exe = item.get("parent_exe") or (parent or {}).get("exe") or ""
            names = program_names({"name": parent_name, "exe": parent_exe})
            if names & ELEVATORS or parent_exe in KNOWN_SETUID:
                continue
            yield self._finding(item, parent, None, ctx,
                                f"runs as root under {parent_name or 'a process'} of uid {parent_uid}")

    def _finding(self, item: dict[str, Any], parent: dict[str, Any] | None,
                 old: dict[str, Any] | None, ctx: RuleContext, what: str) -> Finding:
        evidence: dict[str, Any] = {"process": process_evidence(item)}
        if parent is not None:
            evidence["parent"] = process_evidence(parent)
        else:
            evidence["parent"] = {k: item[k] for k in ("ppid", "parent_name", "parent_uid",
                                                       "parent_exe") if item.get(k) is not None}
        if old is not None:
            evidence["previous"] = {k: old.get(k) for k in ("uid", "euid", "username")}
        ids = f"uid {item.get('uid')}, euid {item.get('euid')}"
        return Finding(
            subject=str(item.get("key") or item["pid"]),
            observed_at=parse_time(item["start_time"]) if item.get("start_time") else ctx.now,
            reason=f"{item.get('exe') or item.get('name')} (pid {item['pid']}, {ids}) {what}",
            evidence=evidence,
        )
