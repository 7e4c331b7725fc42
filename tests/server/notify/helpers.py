"""Test doubles that are real servers: a webhook receiver (http.server) and an SMTP inbox."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def verify_signature(secret: str, headers: Any, body: bytes, tolerance: float = 300) -> bool:
    """What a receiver does (the snippet of docs/notifications.md), written independently."""
    timestamp = headers.get("X-Vigil-Timestamp", "")
    signature = headers.get("X-Vigil-Signature", "")
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > tolerance:
        return False
    expected = "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body,
                                    hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature)


@dataclass
class Received:
    at: float
    path: str
    headers: dict[str, str]
    body: bytes
    signed: bool
    answered: int

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A real HTTP server on a loopback port that checks signatures and can fail on purpose."""

    url: str = ""
    secrets: list[str] = field(default_factory=list)
    #: answer ``fail_status`` to the first ``fail_first`` requests (-1: to every request)
    fail_first: int = 0
    fail_status: int = 500
    delay: float = 0.0
    requests: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, path: str, headers: dict[str, str], body: bytes) -> int:
        time.sleep(self.delay)
        signed = any(verify_signature(s, headers, body) for s in self.secrets)
        with self.lock:
            n = len(self.requests) + 1
            if self.secrets and not signed:
                answer = 401
            elif self.fail_first < 0 or n <= self.fail_first:
                answer = self.fail_status
            else:
                answer = 200
            self.requests.append(Received(time.monotonic(), path, headers, body, signed, answer))
        return answer

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.requests) >= count:
                    return list(self.requests)
            time.sleep(0.01)
        raise AssertionError(f"expected {count} requests, got {len(self.requests)}")



class Inbox:
    """aiosmtpd handler keeping what arrives."""

    def __init__(self) -> None:
        self.envelopes: list[Any] = []
        self.logins: list[tuple[bytes, bytes]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.envelopes.append(envelope)
        return "250 Message accepted for delivery"

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.envelopes) >= count:
                return list(self.envelopes)
            time.sleep(0.01)
        raise AssertionError(f"expected {count} e-mails, got {len(self.envelopes)}")


@contextmanager
def serving_receiver(rec: Receiver | None = None) -> Iterator[Receiver]:
    """``rec`` answering on a real loopback HTTP port (``rec.url``) until the block ends."""
    rec = rec or Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            code = rec.handle(self.path, dict(self.headers.items()), body)
            self.send_response(code)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok" if code == 200 else b"no")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    rec.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, name="test-receiver", daemon=True)
    thread.start()
    try:
        yield rec
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@contextmanager
def smtp_inbox(port: int) -> Iterator[Inbox]:
    """A real SMTP server (aiosmtpd) on a loopback ``port``, keeping what arrives."""
    from aiosmtpd.controller import Controller

    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox
    finally:
        controller.stop()
