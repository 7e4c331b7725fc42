"""Small helpers the rule modules share: time, addresses, process names and evidence."""

from __future__ import annotations

import ipaddress
import re
from datetime import UTC, datetime
from typing import Any

#: what a process item's evidence keeps (no environment beyond the security variables)
PROCESS_FIELDS = ("key", "pid", "ppid", "name", "exe", "cmdline", "uid", "euid", "username",
                  "sha256", "start_time", "cwd", "terminal", "parent_name", "parent_uid",
                  "parent_exe", "stdio_raddr", "stdio_rport", "env", "exe_deleted")
EVENT_FIELDS = ("id", "kind", "observed_at", "source", "message", "src_ip", "user", "pid", "path",
                "data")
MAX_EVIDENCE_EVENTS = 20


def parse_time(value: Any) -> datetime:
    """A datetime from an item's ISO text or a datetime (UTC)."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    parsed = datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def is_loopback(address: str | None) -> bool:
    if not address:
        return True
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback or ip.is_unspecified


def process_evidence(item: dict[str, Any]) -> dict[str, Any]:
    return {name: item[name] for name in PROCESS_FIELDS if item.get(name) not in (None, [], {})}


def event_evidence(event: dict[str, Any]) -> dict[str, Any]:
    out = {name: event.get(name) for name in EVENT_FIELDS if event.get(name) not in (None, "", {})}
    observed = out.get("observed_at")
    if isinstance(observed, datetime):
        out["observed_at"] = observed.isoformat()
    return out


_VERSIONED = re.compile(r"^(python|perl|ruby|php|lua|node|pypy|tclsh|jjs)[0-9.]*$")


def program_names(item: dict[str, Any]) -> set[str]:
    """The names a process goes by: its comm, its executable's basename, versionless too."""
    names = {str(item.get("name") or "")}
    exe = item.get("exe") or ""
    if exe:
        names.add(exe.rsplit("/", 1)[-1])
    cmdline = item.get("cmdline") or []
    if cmdline:
        names.add(str(cmdline[0]).rsplit("/", 1)[-1].lstrip("-"))
    out = set()
    for name in names:
        if not name:
            continue
        out.add(name)
        match = _VERSIONED.match(name)
        if match:
            out.add(match.group(1))
    return out


def epoch(value: datetime) -> float:
    return value.timestamp()
