"""Listening sockets: TCP sockets in LISTEN and bound UDP sockets, with their process."""

from __future__ import annotations

from typing import Any

from ..util import SHORT_MAX, clip, permission_hint
from .base import Collector, CollectorContext
from .socket_table import shared_socket_table


class ListeningCollector(Collector):
    """Every listening socket (see ``vigil.protocol.models.ListeningItem``)."""

    name = "listening"
    produces = "snapshot"
    interval_group = "fast"
    wake_on_process_events = True

    def __init__(self, context: CollectorContext) -> None:
        super().__init__(context)
        self.table = shared_socket_table(context.shared, context.proc)

    def collect(self) -> list[dict[str, Any]]:
        """One item per (protocol, address, port); with SO_REUSEPORT the lowest pid is kept."""
        items: dict[str, dict[str, Any]] = {}
        for sock in self.table.sockets():
            if not sock.listening:
                continue
            pid = self.table.owner(sock.inode) if sock.inode else None
            key = f"{sock.proto}:{sock.laddr}:{sock.lport}"
            known = items.get(key)
            if known is not None and (pid is None or (known["pid"] is not None and known["pid"] <= pid)):
                continue
            items[key] = {
                "key": key,
                "proto": sock.proto,
                "addr": sock.laddr,
                "port": sock.lport,
                "pid": pid,
                "process_name": clip(self.table.process_name(pid), SHORT_MAX),
            }
        if self.table.denied:
            self.report("owners of some sockets", permission_hint())
        return list(items.values())
