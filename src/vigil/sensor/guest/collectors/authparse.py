"""Parsing authentication log lines (OpenSSH, sudo, su, shadow-utils, login, logind) into events.

Accepts the two syslog forms Debian writes — RFC 3339 (``2026-11-27T20:00:00.123456+00:00 host
sshd[12]: ...``, rsyslog's default since Debian 12) and the classic ``Nov 27 20:00:00 host
sshd[12]: ...`` (current year, local time) — journald's JSON entries, and the header-less lines
of ``sshd -E FILE``. Lines from the programs
in :data:`PROGRAMS` that match no rule become ``auth_other``; lines of other programs are ignored.

Where one action logs two lines (``Invalid user`` then ``Failed password for invalid user``;
``passwd``'s PAM line and its own line) only one of them is the counted event, so a rule that
counts failures or password changes counts each action once.
"""

from __future__ import annotations

import re
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from ..events import make_event, valid_ip

SSHD = ("sshd", "sshd-session", "sshd-auth")
SHADOW = (
    "useradd",
    "userdel",
    "usermod",
    "groupadd",
    "groupdel",
    "groupmod",
    "gpasswd",
    "passwd",
    "chpasswd",
    "chage",
)
PROGRAMS = (*SSHD, "sudo", "su", *SHADOW, "login", "systemd-logind")
#: SYSLOG_IDENTIFIERs asked of journalctl (``-t``) when there is no auth log file.
JOURNAL_IDENTIFIERS = PROGRAMS

_NAMESPACE = uuid.UUID("0d6f4a1e-3c9b-4e0a-8a7e-6f1d2b9c5e37")
_MAX_REPEAT = 100

_RFC3339 = re.compile(
    r"^(?P<ts>\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)?)\s+(?P<rest>.*)$"
)
_CLASSIC = re.compile(r"^(?P<ts>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d)\s+(?P<rest>.*)$")
_HEADER = re.compile(r"^(?P<host>\S+)\s+(?P<prog>[^\s\[:]+)(?:\[(?P<pid>\d+)\])?:\s?(?P<msg>.*)$")
_BARE_TAGGED = re.compile(r"^(?P<prog>[\w.-]+)\[(?P<pid>\d+)\]: (?P<msg>.*)$")
_REPEATED = re.compile(r"^message repeated (?P<n>\d+) times: \[ ?(?P<msg>.*?)\]$")


@dataclass(frozen=True)
class LogLine:
    """The syslog envelope of one line."""

    observed_at: str
    host: str
    program: str
    pid: int | None
    message: str


@dataclass
class Match:
    """What a rule made of a message."""

    kind: str
    user: str | None = None
    src: str | None = None
    data: dict[str, Any] | None = None


def parse_timestamp(text: str, now: datetime | None = None) -> datetime | None:
    """An RFC 3339 or classic syslog timestamp as an aware UTC datetime."""
    now = now or datetime.now(UTC)
    if text[:1].isdigit():
        try:
            value = datetime.fromisoformat(text.replace(" ", "T", 1).replace("Z", "+00:00"))
        except ValueError:
            return None
        if value.tzinfo is None:
            value = value.astimezone()  # local time
        return value.astimezone(UTC)
    try:
        local = datetime.strptime(f"{now.year} {' '.join(text.split())}", "%Y %b %d %H:%M:%S")
    except ValueError:
        return None
    value = local.astimezone().astimezone(UTC)
    if value > now + timedelta(days=1):  # a December line read in January
        value = local.replace(year=now.year - 1).astimezone().astimezone(UTC)
    return value


def split_syslog_line(line: str) -> LogLine | None:
    """The envelope of a syslog line, or None when it is not one."""
    match = _RFC3339.match(line) or _CLASSIC.match(line)
    if not match:
        return None
    header = _HEADER.match(match["rest"])
    when = parse_timestamp(match["ts"])
    if not header or when is None:
        return None
    return LogLine(
        observed_at=when.isoformat(),
        host=header["host"],
        program=header["prog"],
        pid=int(header["pid"]) if header["pid"] else None,
        message=header["msg"].rstrip(),
    )


def bare_line(text: str) -> LogLine | None:
    """A line without a syslog header, as ``sshd -E FILE`` writes them: "prog[pid]: message",
    or a bare message that one of OpenSSH's rules recognises. Its time is the time it is read.
    """
    tagged = _BARE_TAGGED.match(text)
    now = datetime.now(UTC).isoformat()
    if tagged and tagged["prog"].lower() in PROGRAMS:
        return LogLine(now, "", tagged["prog"], int(tagged["pid"]), tagged["msg"].rstrip())
    message = text.strip()
    if _match_rules(_SSHD_RULES, message) is None:
        return None  # without a header, only what is surely OpenSSH's is taken
    return LogLine(now, "", "sshd", None, message)


# --- rules -----------------------------------------------------------------------------------

Rule = tuple[re.Pattern[str], str, dict[str, Any]]


def _rules(*rules: tuple[str, str] | tuple[str, str, dict[str, Any]]) -> list[Rule]:
    return [(re.compile(r[0]), r[1], r[2] if len(r) > 2 else {}) for r in rules]  # type: ignore[misc]


_SSHD_RULES = _rules(
    (
        r"^Failed (?P<method>\S+) for (?P<invalid>invalid user )?(?P<user>.*?) from (?P<src>\S+) "
        r"port (?P<port>\d+)",
        "ssh_login_failed",
    ),
    (
        r"^Accepted (?P<method>\S+) for (?P<user>.*?) from (?P<src>\S+) port (?P<port>\d+)"
        r"(?: \S+)?(?:: (?P<key>.+))?$",
        "ssh_login_success",
    ),
    (r"^Invalid user (?P<user>.*?) from (?P<src>\S+)(?: port (?P<port>\d+))?", "ssh_invalid_user"),
    (
        r"^error: maximum authentication attempts exceeded for (?P<invalid>invalid user )?"
        r"(?P<user>.*?) from (?P<src>\S+) port (?P<port>\d+)",
        "auth_other",
        {"reason": "max_auth_tries_exceeded"},
    ),
    (
        r"^Connection closed by (?:authenticating|invalid) user (?P<user>.*?) (?P<src>\S+) "
        r"port (?P<port>\d+)",
        "auth_other",
        {"reason": "connection_closed_preauth"},
    ),
    (
        r"^Disconnected from (?:authenticating |invalid )?user (?P<user>.*?) (?P<src>\S+) "
        r"port (?P<port>\d+)",
        "auth_other",
        {"reason": "disconnected"},
    ),
)

_SU_RULES = _rules(
    (r"^FAILED SU \(to (?P<user>[^)]+)\) (?P<by>\S+) on (?P<tty>\S+)", "su_failed"),
    (r"^\(to (?P<user>[^)]+)\) (?P<by>\S+) on (?P<tty>\S+)", "su_session"),
    (r"^- (?P<tty>\S+) (?P<by>[^:\s]+):(?P<user>\S+)$", "su_failed"),
    (r"^\+ (?P<tty>\S+) (?P<by>[^:\s]+):(?P<user>\S+)$", "su_session"),
)

_SHADOW_RULES = _rules(
    (
        r"^new user: name=(?P<user>[^,]+), UID=(?P<uid>\d+), GID=(?P<gid>\d+), "
        r"home=(?P<home>[^,]*), shell=(?P<shell>[^,]*)",
        "user_added",
    ),
    (
        r"^new group: name=(?P<group>[^,]+)(?:, GID=(?P<gid>\d+))?",
        "group_changed",
        {"change": "added"},
    ),
    (r"^delete user '(?P<user>[^']+)'", "user_deleted"),
    (
        r"^removed group '(?P<group>[^']+)' owned by '(?P<user>[^']+)'",
        "group_changed",
        {"change": "removed"},
    ),
    (r"^group '(?P<group>[^']+)' removed$", "group_changed", {"change": "removed"}),
    (
        r"^group changed in /etc/group \(group (?P<group>[^/\s]+)/?(?P<detail>.*)\)$",
        "group_changed",
        {"change": "modified"},
    ),
    (
        r"^add '(?P<user>[^']+)' to group '(?P<group>[^']+)'",
        "user_modified",
        {"change": "added to group"},
    ),
    (
        r"^delete '(?P<user>[^']+)' from group '(?P<group>[^']+)'",
        "user_modified",
        {"change": "removed from group"},
    ),
    (
        r"^user (?P<user>\S+) added by (?P<by>\S+) to group (?P<group>\S+)",
        "user_modified",
        {"change": "added to group"},
    ),
    (
        r"^user (?P<user>\S+) removed by (?P<by>\S+) from group (?P<group>\S+)",
        "user_modified",
        {"change": "removed from group"},
    ),
    (r"^change user '(?P<user>[^']+)' password", "password_changed"),
    (r"^password for '(?P<user>[^']+)' changed by '(?P<by>[^']+)'", "password_changed"),
    (r"^pam_unix\([^:]+:chauthtok\): password changed for (?P<user>\S+)", "password_changed"),
    (r"^(?:change|lock|unlock) user (?:name )?'(?P<user>[^']+)'", "user_modified"),
)

_PASSWORD_RULES = _rules(
    (r"^pam_unix\([^:]+:chauthtok\): password changed for (?P<user>\S+)", "password_changed"),
    (r"^password for '(?P<user>[^']+)' changed by '(?P<by>[^']+)'", "password_changed"),
)

_LOGIND_RULES = _rules(
    (
        r"^New session (?P<session>\S+) of user (?P<user>[^.\s]+)",
        "auth_other",
        {"reason": "session_opened"},
    ),
)

_USER_HINTS = [
    re.compile(p)
    for p in (
        r"\bfor (?:invalid )?user '?(?P<user>[\w.@$-]+)",
        r"\bof user (?P<user>[\w.@$-]+)",
        r"\buser[= ]'?(?P<user>[\w.@$-]+)",
        r"\bFOR '(?P<user>[^']+)'",
        r"\bfor (?P<user>[\w.@$-]+) from ",
    )
]


def _match_rules(rules: list[Rule], message: str) -> Match | None:
    for pattern, kind, extra in rules:
        found = pattern.search(message)
        if not found:
            continue
        groups = {k: v for k, v in found.groupdict().items() if v is not None}
        user = groups.pop("user", None)
        src = groups.pop("src", None)
        data: dict[str, Any] = dict(extra)
        if groups.pop("invalid", None):
            data["invalid_user"] = True
        for name, value in groups.items():
            data[name] = int(value) if name in ("port", "uid", "gid") else value.strip()
        if kind == "user_modified" and "change" not in data:
            data["change"] = message
        return Match(kind, user, src, data)
    return None


def _match_sudo(message: str) -> Match | None:
    found = re.match(r"^\s*(?P<user>\S+) : (?P<rest>.*)$", message)
    if not found:
        return None
    rest = found["rest"]
    head, sep, command = rest.partition("COMMAND=")
    fields: dict[str, str] = {}
    reasons: list[str] = []
    for part in head.split(" ; "):
        part = part.strip(" ;")
        name, eq, value = part.partition("=")
        if eq and name.isupper():
            fields[name] = value
        elif part:
            reasons.append(part)
    data: dict[str, Any] = {
        "target_user": fields.get("USER", "root"),
        "tty": fields.get("TTY"),
        "pwd": fields.get("PWD"),
    }
    if sep:
        data["command"] = command
    if reasons:
        data["reason"] = "; ".join(reasons)
        return Match("sudo_failed", found["user"], None, data)
    return Match("sudo_command", found["user"], None, data)


def _first_ip(message: str) -> str | None:
    for token in message.replace("=", " ").split():
        ip = valid_ip(token.strip("[](),;:'\""))
        if ip and ("." in ip or ip.count(":") >= 2):
            return ip
    return None


def _fallback(message: str) -> Match:
    """auth_other, with whatever user and address can be recognised."""
    for hint in _USER_HINTS:
        found = hint.search(message)
        if found:
            return Match("auth_other", found["user"], _first_ip(message), {})
    return Match("auth_other", None, _first_ip(message), {})


def classify(program: str, message: str) -> Match | None:
    """The event a message of ``program`` stands for, or None for programs not followed."""
    base = program.lower()
    matchers: list[Callable[[str], Match | None]]
    if base in SSHD:
        matchers = [lambda m: _match_rules(_SSHD_RULES, m)]
    elif base == "sudo":
        matchers = [_match_sudo]
    elif base == "su":
        matchers = [lambda m: _match_rules(_SU_RULES, m)]
    elif base in ("passwd", "chpasswd"):
        matchers = [lambda m: _match_rules(_PASSWORD_RULES, m)]
    elif base in SHADOW:
        matchers = [lambda m: _match_rules(_SHADOW_RULES, m)]
    elif base == "systemd-logind":
        matchers = [lambda m: _match_rules(_LOGIND_RULES, m)]
    elif base == "login":
        matchers = []
    else:
        return None
    for matcher in matchers:
        found = matcher(message)
        if found is not None:
            return found
    return _fallback(message)


class AuthLogParser:
    """Turns log lines or journal entries into security events.

    It remembers the last few password changes so that the two lines ``passwd`` writes for one
    change (PAM's and its own) make one ``password_changed`` event.
    """

    def __init__(self) -> None:
        self._passwords: deque[tuple[str, int | None, str | None]] = deque(maxlen=64)

    def parse_line(self, text: str, *, source: str, seed: str) -> list[dict[str, Any]]:
        """Events from one syslog line; ``seed`` makes their ids stable when read again."""
        line = split_syslog_line(text) or bare_line(text)
        if line is None:
            return []
        return self.events(line, raw=text, source=source, seed=seed)

    def parse_journal_entry(self, entry: dict[str, Any]) -> list[dict[str, Any]]:
        """Events from one ``journalctl -o json`` entry."""
        message = entry.get("MESSAGE")
        if isinstance(message, list):  # journald sends non-UTF-8 messages as byte arrays
            message = bytes(b for b in message if isinstance(b, int)).decode("utf-8", "replace")
        program = entry.get("SYSLOG_IDENTIFIER") or entry.get("_COMM")
        if not isinstance(message, str) or not isinstance(program, str):
            return []
        try:
            when = datetime.fromtimestamp(int(entry["__REALTIME_TIMESTAMP"]) / 1e6, UTC)
        except (KeyError, TypeError, ValueError):
            when = datetime.now(UTC)
        pid = str(entry.get("_PID") or entry.get("SYSLOG_PID") or "")
        line = LogLine(
            observed_at=when.isoformat(),
            host=str(entry.get("_HOSTNAME", "")),
            program=program,
            pid=int(pid) if pid.isdigit() else None,
            message=message.rstrip(),
        )
        raw = f"{when.isoformat()} {line.host} {program}[{line.pid or ''}]: {line.message}"
        seed = str(entry.get("__CURSOR") or raw)
        return self.events(line, raw=raw, source="journal", seed=seed)

    def events(self, line: LogLine, *, raw: str, source: str, seed: str) -> list[dict[str, Any]]:
        """The events of one line (several for rsyslog's "message repeated N times")."""
        message, repeat = line.message, 1
        repeated = _REPEATED.match(message)
        if repeated:
            message, repeat = repeated["msg"], min(_MAX_REPEAT, int(repeated["n"]))
        found = classify(line.program, message)
        if found is None:
            return []
        if found.kind == "password_changed":
            mark = (line.host, line.pid, found.user)
            if line.pid is not None and mark in self._passwords:
                found.kind = "auth_other"
            self._passwords.append(mark)
        data = {"program": line.program, "host": line.host, **(found.data or {})}
        src_ip = valid_ip(found.src)
        if found.src and src_ip is None:
            data["src_host"] = found.src
        if repeat > 1:
            data["repeated"] = repeat
        data = {k: v for k, v in data.items() if v is not None and v != ""}
        events = []
        for index in range(repeat):
            event_id = uuid.uuid5(_NAMESPACE, f"{seed}\n{raw}\n{index}")
            events.append(
                make_event(
                    found.kind,
                    message=raw,
                    source=source,
                    observed_at=line.observed_at,
                    src_ip=src_ip,
                    user=found.user or None,
                    pid=line.pid,
                    data=data,
                    event_id=str(event_id),
                )
            )
        return events
