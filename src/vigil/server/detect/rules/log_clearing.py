"""Covering tracks: logs and shell histories cleared, and shells told not to keep history."""

from __future__ import annotations

import re
from collections.abc import Iterator

from vigil.server.detect.base import Facts, Finding, Rule, RuleContext
from vigil.server.detect.rules._common import event_evidence, parse_time, process_evidence

TAMPERING = ("log_truncated", "log_deleted", "log_replaced", "log_linked_devnull")
_VERBS = {"log_truncated": "emptied or shrunk", "log_deleted": "deleted",
          "log_replaced": "replaced", "log_linked_devnull": "linked to /dev/null"}
_NO_HISTORY_CMD = re.compile(
    r"unset\s+HISTFILE|HISTFILE=/dev/null|HISTFILE=(\s|;|$|'|\")|HISTSIZE=0\b|HISTFILESIZE=0\b|"
    r"set\s+\+o\s+history|history\s+-c\b|ln\s+-sf?\s+/dev/null\s+\S*history")


class LogClearingRule(Rule):
    """A system log (auth log, syslog, wtmp, btmp, lastlog, the journal) or a shell history
    truncated, shrunk, deleted, replaced or linked to /dev/null: someone is erasing the record
    of what they did. Ordinary rotation is recognised by the sensor and not reported."""

    id = "log-clearing"
    title = "Logs or shell history cleared"
    techniques = ("T1070.002", "T1070.003")
    tactic = "defense-evasion"
    severity = "high"
    controls = ("AU-9", "AU-6", "SI-4", "AU-11")
    evidence_fields = ("path", "what", "change", "old_size", "new_size", "old_entries",
                       "entries", "event")
    inputs = tuple(f"event:{k}" for k in TAMPERING)

    def evaluate(self, facts: Facts, ctx: RuleContext) -> Iterator[Finding]:
        for event in facts.events_of(*TAMPERING):
            data = event.get("data") or {}
            watched = data.get("watched", "log")
            history = watched == "history"
            technique = "T1070.003" if history else "T1070.002"
            what = "shell history" if history else ("journal" if watched == "journal" else "log")
            lost = (f" ({data['old_entries']} entries to {data['entries']})"
                    if data.get("old_entries") is not None else "")
            yield Finding(
                subject=f"{event.get('path')}:{event['id']}",
                observed_at=event["observed_at"],
                reason=f"The {what} {event.get('path')} was {_VERBS[event['kind']]}{lost}",
                evidence={"path": event.get("path"), "what": what, "change": event["kind"],
                          "old_size": data.get("old_size"), "new_size": data.get("new_size"),
                          "old_entries": data.get("old_entries"), "entries": data.get("entries"),
                          "event": event_evidence(event)},
                techniques=(technique,),
                title="Shell history cleared" if history else f"System {what} cleared",
            )


class HistoryDisabledRule(Rule):
    """A shell told not to keep history: HISTFILE empty or /dev/null, HISTSIZE=0 in its
    environment, or ``unset HISTFILE`` / ``set +o history`` / ``history -c`` on its command line."""

    id = "history-disabled"
    title = "Shell history disabled"
    techniques = ("T1070.003", "T1562.003")
    tactic = "defense-evasion"
    severity = "medium"
    controls = ("AU-9", "AU-12", "SI-4")
    evidence_fields = ("process", "how")
    inputs = ("processes",)

    def evaluate(self, facts: Facts, ctx: RuleContext) -> Iterator[Finding]:
        for change in facts.changes.get("processes", []):
            item = change.item
            env = item.get("env") or {}
            how = None
            if "HISTFILE" in env and env["HISTFILE"] in ("", "/dev/null"):
                how = f"HISTFILE={env['HISTFILE'] or '(empty)'} in its environment"
            elif env.get("HISTSIZE") == "0" or env.get("HISTFILESIZE") == "0":
                how = "HISTSIZE=0 in its environment"
            else:
                line = " ".join(str(a) for a in item.get("cmdline") or [])
                match = _NO_HISTORY_CMD.search(line)
                if match:
                    how = f"`{match.group(0).strip()}` on its command line"
            if how is None:
                continue
            yield Finding(
                subject=str(item.get("key") or item["pid"]),
                observed_at=parse_time(item["start_time"]) if item.get("start_time") else ctx.now,
                reason=f"{item.get('name')} (pid {item['pid']}) runs with {how}",
                evidence={"process": process_evidence(item), "how": how},
            )

