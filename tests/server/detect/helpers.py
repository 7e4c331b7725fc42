"""An in-memory RuleContext and builders of facts, for unit tests of single rules.

The acceptance tests (tests/e2e/test_attacks.py) run the rules on real attacks; these check
each rule's logic, edge by edge, without a database.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from vigil.server.detect.base import Change, Facts, Finding, Rule

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


class Handle:
    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.saved = False
        self.expires_at: datetime | None = None

    def save(self, *, expires_at: datetime | None = None) -> None:
        self.saved = True
        self.expires_at = expires_at


class MemoryContext:
    def __init__(self, *, processes: list[dict[str, Any]] = (), connections: list[dict[str, Any]] = (),
                 listening: list[dict[str, Any]] = (), rat_hashes: set[str] = frozenset()) -> None:
        self.now = T0
        self.states: dict[tuple[str, bool, str], Handle] = {}
        self.procs = list(processes)
        self.conns = list(connections)
        self.listens = list(listening)
        self.rat = set(rat_hashes)

    def state(self, rule: Rule, key: str, *, shared: bool = False) -> Handle:
        return self.states.setdefault((rule.state_namespace or rule.id, shared, key), Handle({}))

    def preload(self, rule: Rule, keys: list[str], *, shared: bool = False) -> None:
        pass

    def processes(self) -> dict[int, dict[str, Any]]:
        return {p["pid"]: p for p in self.procs}

    def connections(self) -> list[dict[str, Any]]:
        return self.conns

    def listening(self) -> list[dict[str, Any]]:
        return self.listens

    def known_rat_hashes(self) -> set[str]:
        return self.rat


def event(kind: str, *, at: datetime = T0, **fields: Any) -> dict[str, Any]:
    base = {"id": str(uuid.uuid4()), "kind": kind, "observed_at": at, "source": "test",
            "message": fields.pop("message", kind), "src_ip": None, "user": None, "pid": None,
            "path": None, "data": {}}
    base.update(fields)
    return base


def proc(pid: int, name: str, *, ppid: int = 1, uid: int = 1000, **fields: Any) -> dict[str, Any]:
    item = {"key": f"{pid}:1", "pid": pid, "ppid": ppid, "name": name, "exe": f"/usr/bin/{name}",
            "cmdline": [name], "uid": uid, "euid": fields.pop("euid", uid), "username": "user",
            "start_time": T0.isoformat(), "stdio_sockets": [], "exe_deleted": False, "env": {}}
    item.update(fields)
    return item


def facts(*, events: list[dict[str, Any]] = (), **changes: list[dict[str, Any]]) -> Facts:
    return Facts(vm_id=1, tenant_id=1, sensor_id="s", events=list(events),
                 changes={kind: [Change(item=i, old=None, taken_at=T0) for i in items]
                          for kind, items in changes.items()})


def run(rule: Rule, f: Facts, ctx: MemoryContext | None = None) -> list[Finding]:
    return list(rule.evaluate(f, ctx or MemoryContext()))


def seconds(n: float) -> timedelta:
    return timedelta(seconds=n)
