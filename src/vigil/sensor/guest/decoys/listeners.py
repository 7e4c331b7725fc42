"""The decoy listeners: one thread serves every decoy port with a selector.

Each accepted connection gets a deadline, a bounded input buffer and a :class:`Protocol` that
decides when enough was read, what to answer and which events it makes. Connections beyond
:data:`MAX_CONNECTIONS` (or :data:`MAX_PER_SOURCE` from one address) are closed at once; events
go through per-source and global rate limits. Nothing a client sends is ever executed.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import selectors
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..events import make_event
from .ratelimit import RateLimiter, Verdict

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 64
MAX_PER_SOURCE = 8
READ_TIMEOUT = 5.0
MAX_INPUT = 16 * 1024
MAX_OUTPUT = 64 * 1024

Emit = Callable[[dict[str, Any]], None]


@dataclass
class Connection:
    """One client of a decoy."""

    sock: socket.socket
    src_ip: str
    port: int
    protocol: Protocol
    deadline: float
    received: bytearray = field(default_factory=bytearray)
    outgoing: bytearray = field(default_factory=bytearray)
    finished: bool = False  # the protocol has had its say; close once the answer is out


@dataclass
class Reply:
    """A protocol's verdict on a connection: the answer to send, then close; and its events."""

    data: bytes = b""
    events: list[dict[str, Any]] = field(default_factory=list)


class Protocol:
    """What one decoy says and reports; subclasses are in :mod:`.protocols`."""

    name = ""

    def greeting(self) -> bytes:
        """Bytes sent as soon as a client connects."""
        return b""

    def handle(self, conn: Connection) -> Reply | None:
        """Called when data arrived: a Reply once enough was read, else None to wait."""
        raise NotImplementedError

    def incomplete(self, conn: Connection) -> list[dict[str, Any]]:
        """The events of a connection that timed out or closed before :meth:`handle` replied."""
        raise NotImplementedError


class DecoyListeners:
    """Listening sockets of the decoys and the thread that serves them."""

    def __init__(self, emit: Emit, *, per_source: int = 20, total: int = 600) -> None:
        self.emit = emit
        self.selector = selectors.DefaultSelector()
        self.ports: dict[str, int] = {}
        self.by_source = RateLimiter(limit=per_source, window=60.0)
        self.overall = RateLimiter(limit=total, window=60.0)
        self._connections: dict[int, Connection] = {}
        self._listeners: list[socket.socket] = []
        self._stop_r, self._stop_w = os.pipe()
        self.selector.register(self._stop_r, selectors.EVENT_READ, None)
        self._thread: threading.Thread | None = None

    def listen(self, protocol: Protocol, host: str, port: int) -> int:
        """Bind a decoy (raises OSError when the port is taken); returns the port bound."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(64)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._listeners.append(sock)
        self.selector.register(sock, selectors.EVENT_READ, protocol)
        bound = int(sock.getsockname()[1])
        self.ports[protocol.name] = bound
        return bound

    def start(self) -> None:
        """Serve in a thread of its own."""
        self._thread = threading.Thread(target=self._run, name="vigil-decoys", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Close every connection and listener."""
        os.write(self._stop_w, b"x")
        if self._thread is not None:
            self._thread.join(timeout=5)
        for conn in list(self._connections.values()):
            self._close(conn)
        for sock in self._listeners:
            self.selector.unregister(sock)
            sock.close()
        self.selector.close()
        os.close(self._stop_r)
        os.close(self._stop_w)

    # --- the thread ----------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            timeout = None
            if self._connections:
                soonest = min(c.deadline for c in self._connections.values())
                timeout = max(0.0, soonest - time.monotonic())
            for key, mask in self.selector.select(timeout):
                if key.fileobj == self._stop_r:
                    return
                try:
                    if isinstance(key.data, Protocol):
                        self._accept(key.fileobj, key.data)  # type: ignore[arg-type]
                    elif mask & selectors.EVENT_WRITE:
                        self._write(key.data)
                    else:
                        self._read(key.data)
                except Exception:  # one client must never stop the decoys
                    log.exception("decoy connection failed")
                    if isinstance(key.data, Connection):
                        self._close(key.data)
            now = time.monotonic()
            for conn in [c for c in self._connections.values() if c.deadline <= now]:
                if not conn.finished:
                    self._report(conn, conn.protocol.incomplete(conn))
                self._close(conn)

    def _accept(self, listener: socket.socket, protocol: Protocol) -> None:
        for _ in range(64):
            try:
                sock, address = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    return  # out of descriptors: try again on the next readiness
                raise
            src_ip = address[0].removeprefix("::ffff:")
            same_source = sum(1 for c in self._connections.values() if c.src_ip == src_ip)
            if len(self._connections) >= MAX_CONNECTIONS or same_source >= MAX_PER_SOURCE:
                sock.close()
                continue
            sock.setblocking(False)
            conn = Connection(
                sock=sock,
                src_ip=src_ip,
                port=int(listener.getsockname()[1]),
                protocol=protocol,
                deadline=time.monotonic() + READ_TIMEOUT,
            )
            conn.outgoing += protocol.greeting()
            self._connections[sock.fileno()] = conn
            self.selector.register(sock, self._interest(conn), conn)

    def _read(self, conn: Connection) -> None:
        try:
            data = conn.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            if not conn.finished:
                self._report(conn, conn.protocol.incomplete(conn))
            self._close(conn)
            return
        if conn.finished:
            return  # the answer is on its way: ignore what else the client says
        conn.received += data[: MAX_INPUT - len(conn.received)]
        reply = conn.protocol.handle(conn)
        if reply is None and len(conn.received) >= MAX_INPUT:
            reply = Reply(events=conn.protocol.incomplete(conn))
        if reply is not None:
            conn.finished = True
            conn.outgoing += reply.data[:MAX_OUTPUT]
            self._report(conn, reply.events)
            if not conn.outgoing:
                self._close(conn)
                return
            self.selector.modify(conn.sock, self._interest(conn), conn)

    def _write(self, conn: Connection) -> None:
        try:
            sent = conn.sock.send(conn.outgoing)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)
            return
        del conn.outgoing[:sent]
        if not conn.outgoing and conn.finished:
            self._close(conn)
            return
        self.selector.modify(conn.sock, self._interest(conn), conn)

    @staticmethod
    def _interest(conn: Connection) -> int:
        return selectors.EVENT_WRITE if conn.outgoing else selectors.EVENT_READ

    def _close(self, conn: Connection) -> None:
        if self._connections.pop(conn.sock.fileno(), None) is not None:
            self.selector.unregister(conn.sock)
        with contextlib.suppress(OSError):
            conn.sock.shutdown(socket.SHUT_RDWR)
        conn.sock.close()

    # --- events --------------------------------------------------------------------------

    def _report(self, conn: Connection, events: list[dict[str, Any]]) -> None:
        for event in events:
            verdict, suppressed = self.by_source.check(conn.src_ip)
            if verdict is not Verdict.DROP:
                verdict_all, suppressed_all = self.overall.check("*")
                if verdict_all is Verdict.DROP:
                    continue
                suppressed += suppressed_all
                if verdict_all is Verdict.LAST:
                    verdict = Verdict.LAST
            if verdict is Verdict.DROP:
                continue
            if suppressed:
                event["data"]["suppressed_before"] = suppressed
            if verdict is Verdict.LAST:
                event["data"]["rate_limited"] = True
                event["message"] += "; more events from this source are suppressed for a minute"
            self.emit(event)


def decoy_event(kind: str, conn: Connection, message: str, **data: Any) -> dict[str, Any]:
    """A decoy event about ``conn``."""
    user = data.pop("user", None)
    return make_event(
        kind,
        message=message,
        source=f"decoy:{conn.protocol.name}",
        src_ip=conn.src_ip,
        user=user,
        data={"decoy": conn.protocol.name, "port": conn.port, **data},
    )
