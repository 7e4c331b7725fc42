"""Rule state in the database: what stateful rules remember, shared by every server process.

Handles are loaded in bulk (one query per rule and batch), mutated by the rules in memory and
written back with one upsert per batch, in the ingest transaction: state and the alerts it led
to commit together or not at all. On PostgreSQL the rows a batch reads are locked
(``FOR UPDATE``) until it commits, so two server processes never count the same window twice.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from vigil.server.db.models import RuleState, db_time, utcnow

_MAX_KEY = 255


def _key(key: str) -> str:
    if len(key) <= _MAX_KEY:
        return key
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


class Handle:
    """One rule's data under one key; call :meth:`save` to have it written back."""

    __slots__ = ("data", "dirty", "expires_at")

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.dirty = False
        self.expires_at: datetime | None = None

    def save(self, *, expires_at: datetime | None = None) -> None:
        """Write this handle back; rules sharing it keep the latest expiry any of them asks."""
        if self.dirty and self.expires_at is not None and expires_at is not None:
            expires_at = max(self.expires_at, expires_at)
        self.dirty = True
        self.expires_at = expires_at


class StateStore:
    """The rule state of one scope ("vm:<id>", "tenant:<id>") within one transaction."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.postgres = session.get_bind().dialect.name == "postgresql"
        self._handles: dict[tuple[str, str, str], Handle] = {}

    def preload(self, rule_id: str, scope: str, keys: list[str]) -> None:
        wanted = [_key(k) for k in keys if (rule_id, scope, _key(k)) not in self._handles]
        for i in range(0, len(wanted), 500):
            chunk = wanted[i:i + 500]
            if self.postgres:
                # make the rows exist, then lock them: two processes counting the same window
                # wait for each other instead of both starting from nothing
                now = utcnow()
                self.session.execute(
                    pg_insert(RuleState).on_conflict_do_nothing(
                        index_elements=["rule_id", "scope", "key"]),
                    [{"rule_id": rule_id, "scope": scope, "key": key, "data": {},
                      "updated_at": now, "expires_at": None} for key in chunk])
            stmt = select(RuleState.key, RuleState.data).where(
                RuleState.rule_id == rule_id, RuleState.scope == scope, RuleState.key.in_(chunk))
            if self.postgres:
                stmt = stmt.order_by(RuleState.key).with_for_update()
            found: dict[str, Any] = {key: data for key, data in self.session.execute(stmt).all()}
            for key in chunk:
                self._handles[(rule_id, scope, key)] = Handle(dict(found.get(key) or {}))

    def get(self, rule_id: str, scope: str, key: str) -> Handle:
        key = _key(key)
        if (rule_id, scope, key) not in self._handles:
            self.preload(rule_id, scope, [key])
        return self._handles[(rule_id, scope, key)]

    def flush(self) -> int:
        """Write every saved handle back (one upsert through the driver); returns how many.

        A flood (a thousand sources guessing passwords in one batch) writes thousands of rows;
        the driver's ``executemany`` does it at a fraction of the ORM's cost per row.
        """
        sqlite = not self.postgres
        now = db_time(utcnow(), sqlite)
        rows = [
            (rule_id, scope, key, json.dumps(handle.data), now,
             db_time(handle.expires_at, sqlite) if handle.expires_at else None)
            for (rule_id, scope, key), handle in self._handles.items() if handle.dirty
        ]
        if not rows:
            return 0
        mark = "?" if sqlite else "%s"
        data = mark if sqlite else "%s::jsonb"
        self.session.connection().exec_driver_sql(
            "INSERT INTO rule_state (rule_id, scope, key, data, updated_at, expires_at) "
            f"VALUES ({mark}, {mark}, {mark}, {data}, {mark}, {mark}) "
            "ON CONFLICT (rule_id, scope, key) DO UPDATE SET data = excluded.data, "
            "updated_at = excluded.updated_at, expires_at = excluded.expires_at", rows)
        for handle in self._handles.values():
            handle.dirty = False
        return len(rows)


def purge_expired(session: Session, *, now: datetime | None = None) -> int:
    """Delete state whose window has passed; returns how many rows."""
    result = session.execute(delete(RuleState).where(RuleState.expires_at < (now or utcnow())))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
