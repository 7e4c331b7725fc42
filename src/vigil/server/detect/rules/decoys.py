"""Decoys: nobody has a reason to touch them, so every touch is worth an alert."""

from __future__ import annotations

from collections.abc import Iterator

from vigil.server.detect.base import Facts, Finding, Rule, RuleContext
from vigil.server.detect.rules._common import event_evidence


def _hour(event: dict) -> str:  # type: ignore[type-arg]
    return event["observed_at"].strftime("%Y%m%d%H")


class DecoyConnectionRule(Rule):
    """A connection to one of the guest sensor's decoy listeners (a fake SSH or admin port):
    someone is scanning or probing the VM's services."""

    id = "decoy-connection"
    title = "Decoy service probed"
    techniques = ("T1046",)
    tactic = "discovery"
    severity = "medium"
    controls = ("SC-26", "SI-4", "AU-6")
    evidence_fields = ("src_ip", "decoy", "port", "payload", "event")
    inputs = ("event:decoy_connection",)

    def evaluate(self, facts: Facts, ctx: RuleContext) -> Iterator[Finding]:
        for event in facts.events_of("decoy_connection"):
            data = event.get("data") or {}
            src = event.get("src_ip")
            yield Finding(
                subject=f"{src}:{data.get('decoy')}:{data.get('port')}:{_hour(event)}",
                observed_at=event["observed_at"],
                src_ip=src,
                reason=f"{src} connected to the decoy {data.get('decoy')} service on port "
                f"{data.get('port')}",
                evidence={"src_ip": src, "decoy": data.get("decoy"), "port": data.get("port"),
                          "payload": data.get("payload"), "event": event_evidence(event)},
            )


class DecoyLoginRule(Rule):
    """Credentials tried on a decoy login (the fake admin page): an attacker guessing or reusing
    stolen passwords. The alert records what was tried."""

    id = "decoy-login"
    title = "Login attempted on a decoy"
    techniques = ("T1110.001",)
    tactic = "credential-access"
    severity = "high"
    controls = ("SC-26", "AC-7", "SI-4")
    evidence_fields = ("src_ip", "decoy", "user", "password", "event")
    inputs = ("event:decoy_login",)

    def evaluate(self, facts: Facts, ctx: RuleContext) -> Iterator[Finding]:
        for event in facts.events_of("decoy_login"):
            data = event.get("data") or {}
            src = event.get("src_ip")
            yield Finding(
                subject=f"{src}:{data.get('decoy')}:{event.get('user')}:{_hour(event)}",
                observed_at=event["observed_at"],
                src_ip=src,
                reason=f"{src} tried to log in to the decoy {data.get('decoy')} page as "
                f"{event.get('user')!r}",
                evidence={"src_ip": src, "decoy": data.get("decoy"), "user": event.get("user"),
                          "password": data.get("password"), "event": event_evidence(event)},
            )


class CanaryFileRule(Rule):
    """A canary file (planted credentials no one should read) was opened, changed or deleted:
    someone is looking for secrets on the VM."""

    id = "canary-file"
    title = "Canary file touched"
    techniques = ("T1552.001",)
    tactic = "credential-access"
    severity = "high"
    controls = ("SC-26", "SI-4", "AU-6")
    evidence_fields = ("path", "how", "pid", "process", "event")
    inputs = ("event:canary_accessed",)

    def evaluate(self, facts: Facts, ctx: RuleContext) -> Iterator[Finding]:
        for event in facts.events_of("canary_accessed"):
            data = event.get("data") or {}
            who = f" by {data['process']} (pid {data.get('pid')})" if data.get("process") else ""
            yield Finding(
                subject=f"{event.get('path')}:{event['id']}",  # every touch (the sensor rate-limits)
                observed_at=event["observed_at"],
                reason=f"The canary file {event.get('path')} was {data.get('how', 'touched')}{who}",
                evidence={"path": event.get("path"), "how": data.get("how"),
                          "pid": data.get("pid"), "process": data.get("process"),
                          "event": event_evidence(event)},
            )
