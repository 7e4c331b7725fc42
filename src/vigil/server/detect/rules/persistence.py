"""Persistence: cron entries, systemd units, SSH keys, shell start-up files, ld.so.preload.

The guest sensor baselines these paths and reports every file created or changed (with its
hash and a diff of the text); the rule names what kind of foothold each path gives.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from vigil.server.detect.base import Facts, Finding, Rule, RuleContext
from vigil.server.detect.rules._common import event_evidence

#: (test, technique, what, severity), first match wins
_KINDS: tuple[tuple[Any, str, str, str], ...] = (
    (lambda p: p == "/etc/ld.so.preload", "T1574.006", "the dynamic linker's preload list",
     "critical"),
    (lambda p: p.endswith(("/.ssh/authorized_keys", "/.ssh/authorized_keys2")), "T1098.004",
     "SSH authorized keys", "high"),
    (lambda p: p.startswith(("/etc/cron", "/var/spool/cron", "/etc/anacrontab")), "T1053.003",
     "a cron job", "medium"),
    (lambda p: "/systemd/" in p, "T1543.002", "a systemd unit", "medium"),
    (lambda p: p == "/etc/rc.local", "T1037.004", "an rc script", "medium"),
    (lambda p: p.startswith(("/etc/profile", "/etc/bash.bashrc"))
     or p.endswith(("/.bashrc", "/.profile", "/.bash_profile", "/.bash_login", "/.zshrc")),
     "T1546.004", "a shell start-up file", "medium"),
)


def classify(path: str) -> tuple[str, str, str] | None:
    """(technique, what it is, severity) for a persistence path, or None."""
    for test, technique, what, severity in _KINDS:
        if test(path):
            return technique, what, severity
    return None


class PersistenceRule(Rule):
    """A file created or changed under a path that runs code or grants access later: a cron
    job, a systemd unit, an SSH authorized key, /etc/ld.so.preload or a shell start-up file.
    The alert names the technique the path stands for and carries the hash and the diff."""

    id = "persistence"
    title = "Persistence planted"
    techniques = ("T1053.003", "T1543.002", "T1098.004", "T1574.006", "T1546.004", "T1037.004")
    tactic = "persistence"
    severity = "medium"
    controls = ("CM-3", "CM-6", "SI-7", "AC-2")
    evidence_fields = ("path", "change", "sha256", "diff", "event")
    inputs = ("event:persistence_created", "event:persistence_modified")

    def evaluate(self, facts: Facts, ctx: RuleContext) -> Iterator[Finding]:
        for event in facts.events_of("persistence_created", "persistence_modified"):
            path = event.get("path") or ""
            kind = classify(path)
            if kind is None:
                continue
            technique, what, severity = kind
            change = "created" if event["kind"] == "persistence_created" else "modified"
            data = event.get("data") or {}
            yield Finding(
                subject=f"{path}:{data.get('sha256') or event['id']}",
                observed_at=event["observed_at"],
                reason=f"{what} was {change}: {path}",
                evidence={"path": path, "change": change, "sha256": data.get("sha256"),
                          "diff": data.get("diff") or data.get("lines"), "event": event_evidence(event)},
                techniques=(technique,),
                severity=severity,
                title=f"Persistence: {what} {change}",
            )
