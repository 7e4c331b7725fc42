"""SSH brute force: password guessing, a login bought by it, password spraying.

All three keep a sliding window per source address in the rule state, so failures that arrive
in different batches, at different server processes or across a restart still add up.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from vigil.server.detect.base import Facts, Finding, Rule, RuleContext
from vigil.server.detect.rules._common import MAX_EVIDENCE_EVENTS, epoch, event_evidence

FAILURES = ("ssh_login_failed", "ssh_invalid_user")


def _by_source(facts: Facts, kinds: tuple[str, ...]) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in facts.events:
        if event["kind"] in kinds and event.get("src_ip"):
            grouped[event["src_ip"]].append(event)
    for events in grouped.values():
        events.sort(key=lambda e: e["observed_at"])
    return grouped


class _WindowRule(Rule):
    """Counts failures per source in a sliding window kept in the rule state."""

    window: ClassVar[timedelta]
    threshold: ClassVar[int]
    #: a new episode (and so a new alert) starts after this long without failures
    episode_gap: ClassVar[timedelta] = timedelta(minutes=30)

    def _record(self, state: dict[str, Any], event: dict[str, Any]) -> None:
        t = epoch(event["observed_at"])
        if state.get("last") is None or t - state["last"] > self.episode_gap.total_seconds():
            state.clear()
            state.update(episode=t, fails=[], users={}, refs=[], total=0)
        horizon = t - self.window.total_seconds()
        state["fails"] = [f for f in state["fails"] if f >= horizon] + [t]
        state["fails"] = state["fails"][-max(self.threshold * 4, 50):]
        if event.get("user"):
            users = {u: seen for u, seen in state["users"].items() if seen >= horizon}
            users[event["user"]] = t
            state["users"] = dict(sorted(users.items(), key=lambda kv: kv[1])[-200:])
        state["refs"] = (state["refs"] + [event_evidence(event)])[-MAX_EVIDENCE_EVENTS:]
        state["total"] += 1
        state["last"] = max(t, state.get("last") or t)

    def _save(self, handle: Any, facts: Facts) -> None:
        last = handle.data.get("last")
        if last is not None:
            handle.save(expires_at=datetime.fromtimestamp(last, UTC) + self.episode_gap)


class SshPasswordGuessingRule(_WindowRule):
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
    window = timedelta(minutes=2)
    threshold = 5

    def evaluate(self, facts: Facts, ctx: RuleContext) -> Iterator[Finding]:
        grouped = _by_source(facts, FAILURES)
        ctx.preload(self, list(grouped))
        for src, events in grouped.items():
            handle = ctx.state(self, src)
            state = handle.data
            for event in events:
                self._record(state, event)
                if len(state["fails"]) >= self.threshold and not state.get("alerted"):
                    state["alerted"] = True
                    yield Finding(
                        subject=f"{src}@{state['episode']:.0f}",
                        observed_at=event["observed_at"],
                        src_ip=src,
                        reason=f"{len(state['fails'])} failed SSH logins from {src} within "
                        f"{int(self.window.total_seconds())} s",
                        evidence={
                            "src_ip": src,
                            "failures": len(state["fails"]),
                            "users": sorted(state["users"]),
                            "window_seconds": int(self.window.total_seconds()),
                            "events": list(state["refs"]),
                        },
                    )
            self._save(handle, facts)


class SshLoginAfterFailuresRule(_WindowRule):
    """A successful SSH login from an address that has just failed many times: the guessing
    worked and the attacker holds a valid account."""

    id = "ssh-login-after-failures"
    title = "SSH login after repeated failures"
    techniques = ("T1078",)
    tactic = "initial-access"
    severity = "high"
    controls = ("AC-7", "IA-2", "IA-5", "SI-4")
    evidence_fields = ("src_ip", "user", "failures_before", "login", "events")
    inputs = tuple(f"event:{k}" for k in (*FAILURES, "ssh_login_success"))
    window = timedelta(minutes=10)
    threshold = 5

    def evaluate(self, facts: Facts, ctx: RuleContext) -> Iterator[Finding]:
        grouped = _by_source(facts, (*FAILURES, "ssh_login_success"))
        ctx.preload(self, list(grouped))
        for src, events in grouped.items():
            handle = ctx.state(self, src)
            state = handle.data
            for event in events:
                if event["kind"] != "ssh_login_success":
                    self._record(state, event)
                    continue
                t = epoch(event["observed_at"])
                recent = [f for f in state.get("fails", []) if f >= t - self.window.total_seconds()]
                if len(recent) < self.threshold:
                    continue
                yield Finding(
                    subject=f"{src}@{state['episode']:.0f}:{event.get('user')}",
                    observed_at=event["observed_at"],
                    src_ip=src,
                    reason=f"{event.get('user')} logged in over SSH from {src} after "
                    f"{len(recent)} failed attempts from that address",
                    evidence={
                        "src_ip": src,
                        "user": event.get("user"),
                        "failures_before": len(recent),
                        "login": event_evidence(event),
                        "events": list(state.get("refs", [])) + [event_evidence(event)],
                    },
                )
            self._save(handle, facts)


class SshPasswordSprayingRule(_WindowRule):
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
    window = timedelta(minutes=10)
    threshold = 5  # distinct user names

    def evaluate(self, facts: Facts, ctx: RuleContext) -> Iterator[Finding]:
        grouped = _by_source(facts, FAILURES)
        ctx.preload(self, list(grouped))
        for src, events in grouped.items():
            handle = ctx.state(self, src)
            state = handle.data
            for event in events:
                self._record(state, event)
                if len(state["users"]) >= self.threshold and not state.get("alerted"):
                    state["alerted"] = True
                    yield Finding(
                        subject=f"{src}@{state['episode']:.0f}",
                        observed_at=event["observed_at"],
                        src_ip=src,
                        reason=f"{src} tried {len(state['users'])} different user names over "
                        f"SSH within {int(self.window.total_seconds() // 60)} minutes",
                        evidence={
                            "src_ip": src,
                            "users": sorted(state["users"]),
                            "failures": state["total"],
                            "window_seconds": int(self.window.total_seconds()),
                            "events": list(state["refs"]),
                        },
                    )
            self._save(handle, facts)
