"""What the decoys say: an OpenSSH banner and an admin console login page.

Neither implements more than it must to look real to a scanner or an intruder: the SSH decoy
reads the client's version string and hangs up; the HTTP decoy serves a login form and refuses
every password. Everything a client sends is only clipped, made printable and reported.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs, unquote

from .listeners import Connection, Protocol, Reply, decoy_event

SSH_BANNER = b"SSH-2.0-OpenSSH_8.4p1 Debian-5+deb11u1\r\n"
PAYLOAD_CHARS = 512
PASSWORD_CHARS = 128
MAX_HEAD = 8 * 1024
MAX_BODY = 4 * 1024
USER_FIELDS = ("username", "user", "login", "email", "name")
PASSWORD_FIELDS = ("password", "pass", "passwd", "pwd")


def printable(raw: bytes, limit: int = PAYLOAD_CHARS) -> str:
    """``raw`` as text with everything but printable ASCII replaced by ``.``, clipped."""
    return "".join(chr(b) if 32 <= b < 127 else "." for b in raw[:limit])


class SshBanner(Protocol):
    """A fake OpenSSH server: sends a banner, reports the client's version line, hangs up."""

    name = "ssh"

    def greeting(self) -> bytes:
        return SSH_BANNER

    def handle(self, conn: Connection) -> Reply | None:
        end = conn.received.find(b"\n")
        if end < 0 and len(conn.received) < 255:
            return None
        line = bytes(conn.received[: end if end >= 0 else 255]).rstrip(b"\r")
        return Reply(events=[self._event(conn, line)])

    def incomplete(self, conn: Connection) -> list[dict[str, Any]]:
        return [self._event(conn, bytes(conn.received), complete=False)]

    @staticmethod
    def _event(conn: Connection, line: bytes, *, complete: bool = True) -> dict[str, Any]:
        payload = printable(line)
        said = f": {payload}" if payload else " (it sent nothing)"
        return decoy_event(
            "decoy_connection",
            conn,
            f"connection to the SSH decoy on port {conn.port} from {conn.src_ip}{said}",
            payload=payload,
            complete=complete,
        )


LOGIN_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Admin console - Sign in</title>
<style>body{{font-family:sans-serif;background:#f2f4f7}}form{{width:320px;margin:10% auto;
background:#fff;padding:24px;border-radius:6px;box-shadow:0 1px 4px #0002}}input{{width:100%;
margin:6px 0 14px;padding:8px}}.err{{color:#b00020}}</style></head>
<body><form method="post" action="/login"><h2>Admin console</h2>{error}
<label>Username<input name="username" autocomplete="username"></label>
<label>Password<input name="password" type="password" autocomplete="current-password"></label>
<button type="submit">Sign in</button></form></body></html>
"""
INVALID = '<p class="err">Invalid credentials.</p>'


class AdminLogin(Protocol):
    """A fake admin console: a login form that reports every request and every password."""

    name = "http"

    def handle(self, conn: Connection) -> Reply | None:
        data = bytes(conn.received)
        head_end = data.find(b"\r\n\r\n")
        sep = 4
        if head_end < 0:
            head_end, sep = data.find(b"\n\n"), 2
        if head_end < 0:
            return None if len(data) < MAX_HEAD else self._bad(conn, data)
        head = data[:head_end].decode("latin-1")
        request_line, _, header_text = head.partition("\n")
        headers = {}
        for line in header_text.splitlines()[:100]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        parts = request_line.strip().split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return self._bad(conn, data)
        method, target = parts[0].upper(), parts[1]
        try:
            length = min(int(headers.get("content-length", "0")), MAX_BODY)
        except ValueError:
            length = 0
        body = data[head_end + sep : head_end + sep + length]
        if len(body) < length:
            return None  # the rest of the body is on its way (or the deadline comes)
        path = unquote(target.split("?", 1)[0])[:PAYLOAD_CHARS]
        events = [
            decoy_event(
                "decoy_connection",
                conn,
                f"request to the admin decoy on port {conn.port} from {conn.src_ip}: "
                f"{printable(request_line.strip().encode('latin-1'), 200)}",
                payload=printable(request_line.strip().encode("latin-1")),
                method=printable(method.encode("latin-1"), 16),
                path=printable(path.encode("utf-8", "replace")),
                user_agent=printable(headers.get("user-agent", "").encode("latin-1"), 256),
            )
        ]
        error = ""
        if method == "POST":
            user, password = _credentials(body, headers.get("content-type", ""))
            events.append(
                decoy_event(
                    "decoy_login",
                    conn,
                    f"login attempt on the admin decoy on port {conn.port} from {conn.src_ip} "
                    f"as {user or '(no user)'}",
                    user=user,
                    password=password,
                    path=printable(path.encode("utf-8", "replace")),
                )
            )
            error = INVALID
        return Reply(data=_page(200, LOGIN_PAGE.format(error=error)), events=events)

    def incomplete(self, conn: Connection) -> list[dict[str, Any]]:
        first = bytes(conn.received).split(b"\n", 1)[0].rstrip(b"\r")
        return [
            decoy_event(
                "decoy_connection",
                conn,
                f"incomplete request to the admin decoy on port {conn.port} from {conn.src_ip}",
                payload=printable(first),
                complete=False,
            )
        ]

    def _bad(self, conn: Connection, data: bytes) -> Reply:
        return Reply(data=_page(400, "<h1>400 Bad Request</h1>\n"), events=self.incomplete(conn))


def _page(status: int, html: str) -> bytes:
    reason = {200: "OK", 400: "Bad Request"}[status]
    body = html.encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nServer: nginx/1.18.0\r\n"
        f"Content-Type: text/html; charset=utf-8\r\nContent-Length: {len(body)}\r\n"
        "Cache-Control: no-store\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


def _credentials(body: bytes, content_type: str) -> tuple[str | None, str]:
    """The user and password of a login form (urlencoded or JSON), clipped."""
    fields: dict[str, Any] = {}
    text = body.decode("utf-8", "replace")
    if "json" in content_type:
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            fields = {str(k).lower(): v for k, v in list(parsed.items())[:50]}
    else:
        fields = {k.lower(): v[0] for k, v in parse_qs(text, max_num_fields=50).items() if v}
    user = next((str(fields[f]) for f in USER_FIELDS if f in fields), None)
    password = next((str(fields[f]) for f in PASSWORD_FIELDS if f in fields), "")
    clipped = printable(user.encode("utf-8", "replace"), 255) if user else None
    return clipped, printable(password.encode("utf-8", "replace"), PASSWORD_CHARS)
