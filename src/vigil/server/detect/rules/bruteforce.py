"""SSH brute force: password guessing, a login bought by it, password spraying.

The three rules keep one state row per source address between them (namespace ``ssh-auth``,
a part each), so failures that arrive in different batches, at different server processes or
across a restart still add up, and a flood of a thousand sources costs one row per source.
Once a rule has raised its alert for a source's episode it only notes how long the episode
goes on: the work per event stays constant however long the attack lasts.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from vigil.server.detect.base import Facts, Finding, Rule, RuleContext
from vigil.server.detect.rules._common import MAX_EVIDENCE_EVENTS, event_evidence

FAILURES = ("ssh_login_failed", "ssh_invalid_user")
KINDS = (*FAILURES, "ssh_login_success")


def _t(event: dict[str, Any]) -> float:
    """The event's time in epoch seconds, to a tenth (what the windows need, kept short)."""
    t = event.get("t")
    return round(float(t) if t is not None else event["observed_at"].timestamp(), 1)


class _SshAuthRule(Rule):
    """Counts SSH failures per source in a sliding window kept in the shared state row."""

    state_namespace = "ssh-auth"
    part: ClassVar[str]
    window: ClassVar[timedelta]
    threshold: ClassVar[int]
    #: a new episode (and so a new alert) starts after this long without failures
    episode_gap: ClassVar[timedelta] = timedelta(minutes=30)
    #: user names remembered per source (spraying counts them; the others only cite them)
    max_users: ClassVar[int] = 20
    #: events remembered per source until the alert cites them
    max_refs: ClassVar[int] = MAX_EVIDENCE_EVENTS
    #: what the part keeps: failure times (for counts in the window), user names
    track_fails: ClassVar[bool] = True
    track_users: ClassVar[bool] = True

    def _episode(self, part: dict[str, Any], t: float) -> None:
        """Start a new episode when the last failure is older than ``episode_gap``."""
        last = part.get("last")
        if last is None or t - last > self.episode_gap.total_seconds():
            part.clear()
            part.update(episode=t, fails=[], users={}, refs=[], total=0, last=t)

    def _record(self, part: dict[str, Any], event: dict[str, Any], t: float) -> None:
        """Count a failure in the window, with a compact reference for the alert's evidence."""
        horizon = t - self.window.total_seconds()
        if self.track_fails:
            fails = part["fails"]
            fails.append(t)
            if fails[0] < horizon or len(fails) > self.threshold * 4:
                part["fails"] = [f for f in fails if f >= horizon][-self.threshold * 4:]
        user = event.get("user")
        if user and self.track_users:
            users = part["users"]
            users.pop(user, None)
            users[user] = t  # insertion order is recency order
            if len(users) > self.max_users or next(iter(users.values())) < horizon:
                part["users"] = {u: s for u, s in users.items() if s >= horizon}
                part["users"] = dict(list(part["users"].items())[-self.max_users:])
        part["refs"].append(event["id"])  # the engine puts the events in the alert
        if len(part["refs"]) > self.max_refs:
            del part["refs"][0]

    def _save(self, handle: Any, part: dict[str, Any]) -> None:
        if part.get("last") is not None:
            handle.save(expires_at=datetime.fromtimestamp(part["last"], UTC) + self.episode_gap)

    def _sources(self, facts: Facts, ctx: RuleContext) -> Iterator[tuple[str, Any, dict[str, Any],
                                                                          list[dict[str, Any]]]]:
        grouped = facts.by_source(*KINDS)
        ctx.preload(self, list(grouped))
        for src, events in grouped.items():
            handle = ctx.state(self, src)
            yield src, handle, handle.data.setdefault(self.part, {}), events


class _WindowThresholdRule(_SshAuthRule):
    """Alerts once per episode when a count in the window reaches the threshold."""

    def count(self, part: dict[str, Any]) -> int:
        raise NotImplementedError

    def finding(self, src: str, part: dict[str, Any], event: dict[str, Any]) -> Finding:
        raise NotImplementedError

    def evaluate(self, facts: Facts, ctx: RuleContext) -> Iterator[Finding]:
        for src, handle, part, events in self._sources(facts, ctx):
            for event in events:
                if event["kind"] not in FAILURES:
                    continue
                t = _t(event)
                self._episode(part, t)
                part["total"] += 1
                part["last"] = max(t, part["last"])
                if part.get("alerted"):
                    continue  # raised for this episode: only how long it lasts matters now
                self._record(part, event, t)
                if self.count(part) >= self.threshold:
                    part["alerted"] = True
                    yield self.finding(src, part, event)
                    part["refs"] = []  # cited by the alert now
            self._save(handle, part)


class SshPasswordGuessingRule(_WindowThresholdRule):
    """Many failed SSH logins from one address within a short window: someone is guessing
    passwords (a dictionary or brute-force attack)."""

    id = "ssh-password-guessing"
    title = "SSH password guessing"
    techniques = ("T1110.001",)
    tactic = "credential-access"
    severity = "medium"
    controls = ("AC-7", "SI-4", "AU-6")
    evidence_fields = ("src_ip", "failures", "users", "window_seconds", "events")
    inputs = tuple(f"event:{k}" for k in FAILURES)
    part = "guess"
    window = timedelta(minutes=2)
    threshold = 5

    def count(self, part: dict[str, Any]) -> int:
        return len(part["fails"])

    def finding(self, src: str, part: dict[str, Any], event: dict[str, Any]) -> Finding:
        return Finding(
            subject=f"{src}@{part['episode']:.0f}",
            observed_at=event["observed_at"],
            src_ip=src,
            reason=f"{len(part['fails'])} failed SSH logins from {src} within "
            f"{int(self.window.total_seconds())} s",
            evidence={"src_ip": src, "failures": len(part["fails"]), "users": sorted(part["users"]),
                      "window_seconds": int(self.window.total_seconds())},
            event_ids=list(part["refs"]),
        )


class SshPasswordSprayingRule(_WindowThresholdRule):
    """One address trying many different user names: password spraying, one or two
    passwords against many accounts to stay under lockout thresholds."""

    id = "ssh-password-spraying"
    title = "SSH password spraying"
    techniques = ("T1110.003",)
    tactic = "credential-access"
    severity = "medium"
    controls = ("AC-7", "SI-4", "AU-6")
    evidence_fields = ("src_ip", "users", "failures", "window_seconds", "events")
    inputs = tuple(f"event:{k}" for k in FAILURES)
    part = "spray"
    window = timedelta(minutes=10)
    threshold = 5  # distinct user names
    max_users = 200
    track_fails = False

    def count(self, part: dict[str, Any]) -> int:
        return len(part["users"])

    def finding(self, src: str, part: dict[str, Any], event: dict[str, Any]) -> Finding:
        return Finding(
            subject=f"{src}@{part['episode']:.0f}",
            observed_at=event["observed_at"],
            src_ip=src,
            reason=f"{src} tried {len(part['users'])} different user names over SSH within "
            f"{int(self.window.total_seconds() // 60)} minutes",
            evidence={"src_ip": src, "users": sorted(part["users"]), "failures": part["total"],
                      "window_seconds": int(self.window.total_seconds())},
            event_ids=list(part["refs"]),
        )


class SshLoginAfterFailuresRule(_SshAuthRule):
    """A successful SSH login from an address that has just failed many times: the guessing
    worked and the attacker holds a valid account."""

    id = "ssh-login-after-failures"
    title = "SSH login after repeated failures"
    techniques = ("T1078",)
    tactic = "initial-access"
    severity = "high"
    controls = ("AC-7", "IA-2", "IA-5", "SI-4")
    evidence_fields = ("src_ip", "user", "failures_before", "login", "events")
    inputs = tuple(f"event:{k}" for k in KINDS)
    part = "login"
    window = timedelta(minutes=10)
    threshold = 5
    max_refs = 10
    track_users = False

    def evaluate(self, facts: Facts, ctx: RuleContext) -> Iterator[Finding]:
        for src, handle, part, events in self._sources(facts, ctx):
            for event in events:
                t = _t(event)
                if event["kind"] != "ssh_login_success":
                    self._episode(part, t)
                    part["total"] += 1
                    part["last"] = max(t, part["last"])
                    self._record(part, event, t)
                    continue
                recent = [f for f in part.get("fails", []) if f >= t - self.window.total_seconds()]
                if len(recent) < self.threshold:
                    continue
                yield Finding(
                    subject=f"{src}@{part['episode']:.0f}:{event.get('user')}",
                    observed_at=event["observed_at"],
                    src_ip=src,
                    reason=f"{event.get('user')} logged in over SSH from {src} after "
                    f"{len(recent)} failed attempts from that address",
                    evidence={"src_ip": src, "user": event.get("user"),
                              "failures_before": len(recent), "login": event_evidence(event)},
                    event_ids=[*part.get("refs", []), event["id"]],
                )
            self._save(handle, part)
