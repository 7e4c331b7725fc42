"""What the alert and incident pages show, built on the read services: filtered lists, counts,
ATT&CK names, the kill-chain strip, and an alert's evidence arranged for reading.

The views stay thin (parse the request, call these, render); the templates only lay out.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from vigil.errors import InvalidInput
from vigil.server.db.models import VM, Alert, Incident
from vigil.server.detect.attack import TACTIC_NAMES, TECHNIQUES, kill_chain_order
from vigil.server.services import alerts, queries
from vigil.server.services.auth import Principal

SEVERITIES = ("critical", "high", "medium", "low", "info")
ALERT_STATUSES = ("open", "acknowledged", "closed", "false_positive")
INCIDENT_STATUSES = ("open", "investigating", "contained", "closed")
ALERT_STATUS_LABELS = {"open": "Reopen", "acknowledged": "Acknowledge", "closed": "Close",
                       "false_positive": "False positive"}
PAGE_SIZE = 50

#: the kill-chain steps Vigil's rules can name; the strip always shows these, in order
DETECTED_TACTICS = tuple(kill_chain_order(
    {t for tech in TECHNIQUES.values() for t in tech.tactics}))


# --- filters -----------------------------------------------------------------------------------


@dataclass
class AlertFilters:
    """The /alerts filter form, checked. Empty form fields mean "any"."""

    severity: str | None = None
    technique: str | None = None
    vm_id: int | None = None
    status: str | None = None
    since: datetime | None = None

    @classmethod
    def parse(cls, *, severity: str | None, technique: str | None, vm_id: str | None,
              status: str | None, since: str | None) -> AlertFilters:
        return cls(severity=_choice("severity", severity, SEVERITIES),
                   technique=(technique or "").strip().upper() or None,
                   vm_id=_int("VM", vm_id), status=_choice("status", status, ALERT_STATUSES),
                   since=parse_since(since))

    def query(self) -> dict[str, str]:
        """The filters as URL query parameters (for the next-page link and the CSV export)."""
        out = {"severity": self.severity, "technique": self.technique,
               "vm_id": str(self.vm_id) if self.vm_id is not None else None,
               "status": self.status,
               "since": self.since.strftime("%Y-%m-%dT%H:%M") if self.since else None}
        return {k: v for k, v in out.items() if v}


@dataclass
class IncidentFilters:
    severity: str | None = None
    vm_id: int | None = None
    status: str | None = None

    @classmethod
    def parse(cls, *, severity: str | None, vm_id: str | None,
              status: str | None) -> IncidentFilters:
        return cls(severity=_choice("severity", severity, SEVERITIES), vm_id=_int("VM", vm_id),
                   status=_choice("status", status, INCIDENT_STATUSES))

    def query(self) -> dict[str, str]:
        out = {"severity": self.severity, "status": self.status,
               "vm_id": str(self.vm_id) if self.vm_id is not None else None}
        return {k: v for k, v in out.items() if v}


def _choice(name: str, value: str | None, allowed: Sequence[str]) -> str | None:
    value = (value or "").strip()
    if not value:
        return None
    if value not in allowed:
        raise InvalidInput(f"{name} must be one of {', '.join(allowed)}, not {value!r}")
    return value


def parse_status(name: str, value: str, allowed: Sequence[str]) -> str:
    """A status a form posted; one of ``allowed`` or an error naming them."""
    status = _choice(name, value, allowed)
    if status is None:
        raise InvalidInput(f"{name} is required: one of {', '.join(allowed)}")
    return status


def _int(name: str, value: str | None) -> int | None:
    value = (value or "").strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise InvalidInput(f"{name} must be a number, not {value!r}") from None


def parse_since(value: str | None) -> datetime | None:
    """A date or date-time from the form (``2026-11-27`` or ``2026-11-27T12:00``), taken as UTC."""
    value = (value or "").strip()
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(
            f"since must be a date or date and time like 2026-11-27T12:00, not {value!r}"
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def page_link(path: str, params: dict[str, str], cursor: str | None) -> str | None:
    return f"{path}?{urlencode({**params, 'cursor': cursor})}" if cursor else None


# --- lists -------------------------------------------------------------------------------------


def alert_page(session: Session, principal: Principal, filters: AlertFilters, *,
               cursor: str | None, limit: int = PAGE_SIZE) -> queries.Page:
    """One page of the principal's alerts, newest first, as the API's ``GET /alerts`` finds them."""
    stmt = queries.alerts_query(principal, vm_id=filters.vm_id, severity=filters.severity,
                                since=filters.since)
    if filters.technique:
        stmt = alerts.technique_filter(stmt, filters.technique)
    if filters.status:
        stmt = stmt.where(Alert.status == filters.status)
    return queries.paginate(session, stmt, Alert.id, limit=limit, cursor=cursor)


def incident_page(session: Session, principal: Principal, filters: IncidentFilters, *,
                  cursor: str | None, limit: int = PAGE_SIZE) -> queries.Page:
    stmt = queries.incidents_query(principal, vm_id=filters.vm_id, status=filters.status)
    if filters.severity:
        stmt = stmt.where(Incident.severity == filters.severity)
    return queries.paginate(session, stmt, Incident.id, limit=limit, cursor=cursor)


def recent_alerts(session: Session, principal: Principal, *, vm_id: int | None = None,
                  limit: int = 20) -> list[Alert]:
    stmt = queries.alerts_query(principal, vm_id=vm_id).order_by(Alert.id.desc()).limit(limit)
    return list(session.scalars(stmt))


def open_alert_counts(session: Session, principal: Principal) -> dict[str, int]:
    """Open alerts per severity, most severe first (zeros included, so the tiles stay put)."""
    base = queries.alerts_query(principal).where(Alert.status == "open").subquery()
    rows = session.execute(select(base.c.severity, func.count()).group_by(base.c.severity))
    found: dict[str, int] = {sev: n for sev, n in rows}
    return {sev: int(found.get(sev, 0)) for sev in SEVERITIES}


def active_incidents(session: Session, principal: Principal, *, limit: int = 10) -> list[Incident]:
    """The latest incidents nobody has closed yet."""
    stmt = (queries.incidents_query(principal).where(Incident.status != "closed")
            .order_by(Incident.id.desc()).limit(limit))
    return list(session.scalars(stmt))


def vm_names(session: Session, principal: Principal) -> dict[int, str]:
    """The names of the VMs the principal may see (for tables and the VM filter)."""
    return {vm.id: vm.name for vm in session.scalars(
        queries.vms_query(principal).order_by(VM.name).limit(1000))}


# --- ATT&CK ------------------------------------------------------------------------------------


def technique_info(tid: str) -> dict[str, Any]:
    """Name, tactics and URL of a technique; an id missing from the table still gets its URL."""
    known = TECHNIQUES.get(tid)
    url = "https://attack.mitre.org/techniques/" + tid.replace(".", "/") + "/"
    if known is None:
        return {"id": tid, "name": "", "tactics": [], "url": url}
    return {"id": known.id, "name": known.name, "url": known.url,
            "tactics": [TACTIC_NAMES.get(t, t) for t in known.tactics]}


def tactic_name(tactic: str) -> str:
    return TACTIC_NAMES.get(tactic, tactic.replace("-", " ").title()) if tactic else ""


def kill_chain(present: Sequence[str]) -> list[dict[str, Any]]:
    """The kill-chain strip: Vigil's tactics (and any other present one) in order, marked."""
    have = set(present)
    steps = kill_chain_order(set(DETECTED_TACTICS) | have)
    return [{"id": t, "name": tactic_name(t), "present": t in have} for t in steps]



# --- evidence ----------------------------------------------------------------------------------

#: process fields shown first, in this order, with their labels
_PROCESS_LABELS = (("pid", "PID"), ("ppid", "Parent PID"), ("name", "Name"),
                   ("username", "User"), ("uid", "UID"), ("euid", "EUID"), ("exe", "Executable"),
                   ("cmdline", "Command line"), ("sha256", "SHA-256"), ("cwd", "Working dir"),
                   ("terminal", "Terminal"), ("start_time", "Started"),
                   ("parent_name", "Parent name"), ("parent_uid", "Parent UID"),
                   ("parent_exe", "Parent executable"), ("stdio_raddr", "Stdio peer address"),
                   ("stdio_rport", "Stdio peer port"), ("exe_deleted", "Executable deleted"),
                   ("env", "Environment"))
_CONNECTION_KEYS = {"proto", "laddr", "lport", "raddr", "rport"}


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list) and all(not isinstance(v, dict | list) for v in value):
        return " ".join(str(v) for v in value)
    if isinstance(value, dict | list):
        return json.dumps(value, indent=2, sort_keys=True, default=str)
    return str(value)


_LABELS = {"src_ip": "Source IP", "sha256": "SHA-256", "c2": "Command and control",
           "pid": "PID", "uid": "UID", "ip": "IP", "window_seconds": "Window (seconds)"}


def _label(key: str) -> str:
    return _LABELS.get(key) or key.replace("_", " ").capitalize()


def _is_event(value: Any) -> bool:
    return isinstance(value, dict) and bool(value.get("kind")) and "id" in value


def _is_process(value: Any) -> bool:
    return isinstance(value, dict) and "pid" in value and ("name" in value or "exe" in value)


def _process_rows(item: dict[str, Any]) -> list[tuple[str, str]]:
    rows = [(label, _text(item[key])) for key, label in _PROCESS_LABELS
            if item.get(key) not in (None, "", [], {})]
    known = {k for k, _ in _PROCESS_LABELS} | {"key"}
    rows += [(_label(k), _text(v)) for k, v in sorted(item.items()) if k not in known]
    return rows


def _event_row(event: dict[str, Any]) -> dict[str, str]:
    return {"observed_at": _text(event.get("observed_at")), "kind": _text(event.get("kind")),
            "src_ip": _text(event.get("src_ip")), "user": _text(event.get("user")),
            "message": _text(event.get("message") or event.get("path"))}


def evidence_sections(evidence: dict[str, Any]) -> list[dict[str, Any]]:
    """The evidence as sections a template can lay out without guessing:

    ``facts`` (label/value pairs of the plain fields), ``process`` (a labelled process),
    ``connection`` (one socket), ``events`` (a table of events with their messages),
    ``text`` (a file diff or lines, kept preformatted) and ``json`` (anything else, pretty).
    """
    facts: list[tuple[str, str]] = []
    sections: list[dict[str, Any]] = []
    for key, value in evidence.items():
        title = _label(key)
        if value in (None, "", [], {}):
            continue
        if _is_process(value):
            sections.append({"type": "process", "title": title, "rows": _process_rows(value)})
        elif isinstance(value, dict) and _CONNECTION_KEYS & set(value) and "laddr" in value:
            remote = f"{value.get('raddr') or ''}:{value.get('rport') or ''}".strip(":")
            sections.append({"type": "connection", "title": title, "rows": [
                ("Protocol", _text(value.get("proto"))),
                ("Local", f"{value.get('laddr')}:{value.get('lport')}"),
                ("Remote", remote), ("State", _text(value.get("status"))),
                ("PID", _text(value.get("pid"))), ("Process", _text(value.get("process_name")))]})
        elif isinstance(value, dict) and set(value) == {"address", "port"}:
            facts.append((title, f"{value['address']}:{value['port']}"))
        elif _is_event(value):
            sections.append({"type": "events", "title": title, "rows": [_event_row(value)]})
        elif isinstance(value, list) and value and all(_is_event(v) for v in value):
            sections.append({"type": "events", "title": title,
                             "rows": [_event_row(v) for v in value]})
        elif key in ("diff", "lines", "payload") or (isinstance(value, str) and "\n" in value):
            sections.append({"type": "text", "title": title, "text": _text(value)})
        elif isinstance(value, dict) or (isinstance(value, list)
                                          and any(isinstance(v, dict | list) for v in value)):
            sections.append({"type": "json", "title": title, "text": _text(value)})
        else:
            facts.append((title, _text(value)))
    if facts:
        sections.insert(0, {"type": "facts", "title": "Details", "rows": facts})
    return sections


def timeline_rows(timeline: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The incident timeline (from ``alerts.incident_detail``) with labels for the table."""
    out = []
    for entry in timeline:
        detail = entry.get("detail") or {}
        if entry["type"] == "alert":
            what = tactic_name(detail.get("tactic") or "")
            text = detail.get("reason") or ""
        else:
            what = detail.get("kind") or ""
            text = detail.get("path") or ""
        out.append({**entry, "what": what, "text": text, "src_ip": detail.get("src_ip"),
                    "user": detail.get("user")})
    return out
