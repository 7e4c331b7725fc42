"""Connections: TCP and UDP v4/v6 sockets talking to a peer, with the process that owns them."""

from __future__ import annotations

from typing import Any

from ..util import SHORT_MAX, clip, permission_hint
from .base import Collector, CollectorContext
from .socket_table import shared_socket_table


class ConnectionsCollector(Collector):
    """Every non-listening socket (see ``vigil.protocol.models.ConnectionItem``)."""

    name = "connections"
    produces = "snapshot"
    interval_group = "fast"
    wake_on_process_events = True

    def __init__(self, context: CollectorContext) -> None:
        super().__init__(context)
        self.table = shared_socket_table(context.shared, context.proc)

    def collect(self) -> list[dict[str, Any]]:
        """One item per connection; the key is the 4-tuple (plus the inode if it repeats)."""
        items: dict[str, dict[str, Any]] = {}
        names: dict[int, str | None] = {}
        for sock in self.table.sockets():
            if sock.listening:
                continue
            pid = self.table.owner(sock.inode) if sock.inode else None
            if pid is not None and pid not in names:
                names[pid] = self.table.process_name(pid)
            key = f"{sock.proto}:{sock.laddr}:{sock.lport}:{sock.raddr}:{sock.rport}"
            if key in items:
                key = f"{key}:{sock.inode}"
            items[key] = {
                "key": key,
                "proto": sock.proto,
                "laddr": sock.laddr,
                "lport": sock.lport,
                "raddr": sock.raddr,
                "rport": sock.rport,
                "status": sock.state if sock.proto.startswith("tcp") else "",
                "pid": pid,
                "process_name": clip(names.get(pid), SHORT_MAX) if pid is not None else None,
                "uid": sock.uid,
            }
        if self.table.denied:
            self.report("owners of some sockets", permission_hint())
        return list(items.values())
