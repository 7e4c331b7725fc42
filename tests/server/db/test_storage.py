"""Storage on SQLite and PostgreSQL: migrations, append-only audit chain, inventory history."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import delete, select, text, update
from sqlalchemy.exc import DBAPIError

from vigil.server.db.migrate import is_current
from vigil.server.db.models import VM, AuditRecord, InventoryItem, Tenant
from vigil.server.services.audit import SYSTEM, audit, verify_chain
from vigil.server.services.telemetry import apply_snapshot


def test_schema_is_current_and_sqlite_uses_wal(app: Any) -> None:
    db = app.state.db
    assert is_current(db.engine)
    if db.dialect == "sqlite":
        with db.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_audit_log_is_append_only_and_chained(app: Any) -> None:
    db = app.state.db
    with db.write() as s:
        for i in range(5):
            audit(s, actor=SYSTEM, action="test.action", target_id=i, detail={"i": i})
    with db.read() as s:
        assert verify_chain(s) == (5, None)
        rows = s.scalars(select(AuditRecord).order_by(AuditRecord.id)).all()
        assert rows[0].prev_hash == "0" * 64 and rows[1].prev_hash == rows[0].hash
        assert all(r.at.tzinfo is not None and r.at.utcoffset() == timedelta(0) for r in rows)
    for stmt in (update(AuditRecord).values(action="forged"), delete(AuditRecord)):
        with pytest.raises(DBAPIError, match="append-only"), db.write() as s:
            s.execute(stmt)
    with db.read() as s:
        assert verify_chain(s) == (5, None)


def test_audit_chain_detects_a_forged_row(app: Any) -> None:
    db = app.state.db
    with db.write() as s:
        for i in range(3):
            audit(s, actor=SYSTEM, action="test.action", target_id=i)
    # an attacker with database access drops the trigger and edits a record
    with db.engine.begin() as conn:
        if db.dialect == "sqlite":
            conn.exec_driver_sql("DROP TRIGGER audit_log_no_update")
        else:
            conn.exec_driver_sql("DROP TRIGGER audit_log_append_only ON audit_log")
        conn.execute(text("UPDATE audit_log SET actor = 'someone-else' WHERE id = 2"))
    with db.read() as s:
        assert verify_chain(s) == (2, 2)


def test_inventory_keeps_history(app: Any) -> None:
    db = app.state.db
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    with db.write() as s:
        tenant = Tenant(name="t")
        s.add(tenant)
        s.flush()
        vm = VM(tenant_id=tenant.id, name="vm")
        s.add(vm)
        s.flush()
        vm_id = vm.id
        a, b = {"key": "a", "pid": 1}, {"key": "b", "pid": 2}
        assert apply_snapshot(s, vm_id=vm_id, kind="processes", taken_at=t0, full=True,
                              items=[a, b], removed=[]) == (2, 0, 0)
        # a diff: b changed, c added, a removed
        assert apply_snapshot(s, vm_id=vm_id, kind="processes", taken_at=t0 + timedelta(1),
                              full=False, items=[{"key": "b", "pid": 3}, {"key": "c", "pid": 4}],
                              removed=["a"]) == (1, 1, 1)
        # a full snapshot without c removes it
        assert apply_snapshot(s, vm_id=vm_id, kind="processes", taken_at=t0 + timedelta(2),
                              full=True, items=[{"key": "b", "pid": 3}], removed=[]) == (0, 0, 1)
    with db.read() as s:
        rows = s.scalars(select(InventoryItem).order_by(InventoryItem.id)).all()
        current = [(r.key, r.data["pid"]) for r in rows if r.removed_at is None]
        assert current == [("b", 3)]
        history = [(r.key, r.data["pid"], r.first_seen, r.removed_at) for r in rows]
        assert ("a", 1, t0, t0 + timedelta(1)) in history
        assert ("b", 2, t0, t0 + timedelta(1)) in history
        assert ("c", 4, t0 + timedelta(1), t0 + timedelta(2)) in history
