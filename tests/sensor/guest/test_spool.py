"""The disk spool: nothing lost, nothing duplicated, across reopen."""

from __future__ import annotations

import os
import stat
import uuid

from vigil.sensor.guest.spool import Spool, build_batch


def _event(n: int) -> dict:
    return {"id": str(uuid.uuid4()), "kind": "auth_other", "n": n}


def test_put_take_ack_survives_reopen(tmp_path):
    path = tmp_path / "spool.sqlite"
    spool = Spool(path)
    for n in range(10):
        spool.put("event", _event(n))
    spool.put("snapshot", {"id": str(uuid.uuid4()), "kind": "users", "items": []})
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600

    batch = spool.take(max_events=4)
    assert [row.payload["n"] for row in batch] == [0, 1, 2, 3]
    assert spool.take(max_events=4) == batch  # not acked: taken again, same order
    spool.ack([row.row_id for row in batch])
    spool.close()

    reopened = Spool(path)
    assert reopened.count() == 7
    rest = reopened.take()
    assert [row.payload.get("n") for row in rest] == [4, 5, 6, 7, 8, 9, None]
    assert rest[-1].kind == "snapshot"
    reopened.ack([row.row_id for row in rest])
    assert reopened.count() == 0 and reopened.take() == []
    assert reopened.backlog_bytes == 0


def test_batches_respect_byte_and_snapshot_limits(tmp_path):
    spool = Spool(tmp_path / "spool.sqlite")
    for n in range(5):
        spool.put("event", dict(_event(n), pad="x" * 1000))
    assert len(spool.take(max_bytes=2500)) == 2
    assert len(spool.take(max_bytes=10)) == 1  # always at least one row
    for _ in range(3):
        spool.put("snapshot", {"id": str(uuid.uuid4()), "kind": "users", "items": []})
    assert len(spool.take(max_snapshots=1)) == 6


def test_cap_drops_old_snapshots_never_events(tmp_path):
    spool = Spool(tmp_path / "spool.sqlite", max_backlog_bytes=3000)
    spool.put("event", dict(_event(0), pad="e" * 1000))
    dropped = 0
    for _ in range(5):
        dropped += spool.put("snapshot", {"id": str(uuid.uuid4()), "kind": "users", "pad": "s" * 1000})
    dropped += spool.put("event", dict(_event(1), pad="e" * 1000))
    kinds = [row.kind for row in spool.take()]
    assert kinds.count("event") == 2
    assert dropped >= 3 and spool.backlog_bytes <= 3000 + 100


def test_batch_id_is_stable_for_the_same_rows(tmp_path):
    spool = Spool(tmp_path / "spool.sqlite")
    for n in range(3):
        spool.put("event", _event(n))
    spool.put("snapshot", {"id": str(uuid.uuid4()), "kind": "users", "items": []})
    rows = spool.take()
    first, second = build_batch(rows), build_batch(rows)
    assert first["batch_id"] == second["batch_id"]
    assert len(first["events"]) == 3 and len(first["snapshots"]) == 1
    assert build_batch(rows[:2])["batch_id"] != first["batch_id"]
