"""What sensors send: heartbeats, batches of security events and inventory snapshots."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from vigil.errors import Forbidden, NotFound
from vigil.protocol.models import (
    HeartbeatRequest,
    HeartbeatResponse,
    IngestAck,
    IngestBatch,
    TaskPublic,
    TaskResult,
)
from vigil.server.db.models import Event, Heartbeat, InventoryItem, Snapshot, Task, db_time, utcnow
from vigil.server.detect.base import Change, Facts
from vigil.server.detect.engine import DetectionEngine
from vigil.server.services.audit import audit
from vigil.server.services.auth import SensorPrincipal, touch_sensor

_CHUNK = 500


def heartbeat(
    session: Session, *, token: str, client_ip: str | None, beat: HeartbeatRequest,
    interval: float,
) -> HeartbeatResponse:
    """Authenticate, record a beat and hand out the sensor's pending tasks.

    This is the call a whole fleet makes every few seconds: Core statements, one to
    authenticate and update the sensor, one to keep the beat, one to look for tasks.
    """
    now = utcnow()
    res = beat.resources
    values: dict[str, Any] = {"last_seen_at": now, "stopped_at": now if beat.shutting_down else None}
    if res is not None:
        values["resources"] = res.model_dump()
    if beat.unreadable:
        values["unreadable"] = beat.unreadable
    if beat.interval is not None:
        values["heartbeat_interval"] = beat.interval
    sensor = touch_sensor(session, token=token, client_ip=client_ip, values=values)
    conn = session.connection()
    conn.execute(insert(Heartbeat).values(
        sensor_id=sensor.sensor_id, received_at=now, sent_at=beat.sent_at, seq=beat.seq,
        cpu_percent=res.cpu_percent if res else None, mem_used=res.mem_used if res else None,
        mem_total=res.mem_total if res else None, disk_used=res.disk_used if res else None,
        disk_total=res.disk_total if res else None, net_rx_bytes=res.net_rx_bytes if res else None,
        net_tx_bytes=res.net_tx_bytes if res else None, spool_backlog=beat.spool_backlog,
    ))
    tasks = []
    if beat.shutting_down:
        audit(session, actor=sensor.actor, action="sensor.shutdown", target_type="sensor",
              target_id=sensor.sensor_id)
    else:
        pending = conn.execute(
            select(Task.id, Task.kind, Task.params, Task.created_at)
            .where(Task.sensor_id == sensor.sensor_id, Task.status == "pending")
            .order_by(Task.id).limit(20)
        ).all()
        if pending:
            conn.execute(update(Task).where(Task.id.in_([p.id for p in pending]))
                         .values(status="sent", sent_at=now))
            tasks = [TaskPublic(id=p.id, kind=p.kind, params=p.params, created_at=p.created_at)
                     for p in pending]
    return HeartbeatResponse(server_time=now, heartbeat_interval=interval, tasks=tasks)


_EVENT_COLUMNS = ("uuid", "tenant_id", "vm_id", "sensor_id", "kind", "observed_at", "received_at",
                  "source", "message", "src_ip", "username", "pid", "path", "data")


def _insert_events(session: Session, rows: list[tuple[Any, ...]]) -> int:
    """The hot loop of ingest: the driver's executemany, no per-row ORM or type machinery.

    Values are converted here exactly as the column types would store them (UTC; on SQLite
    the naive ``YYYY-MM-DD HH:MM:SS.ffffff`` text SQLAlchemy writes), so ORM reads agree.
    """
    conn = session.connection()
    cols = ", ".join(_EVENT_COLUMNS)
    if conn.dialect.name == "sqlite":
        marks = ", ".join("?" * len(_EVENT_COLUMNS))
        sql = f"INSERT INTO events ({cols}) VALUES ({marks}) ON CONFLICT (uuid) DO NOTHING"
    else:
        marks = ", ".join(["%s"] * len(_EVENT_COLUMNS))
        sql = f"INSERT INTO events ({cols}) VALUES ({marks}) ON CONFLICT (uuid) DO NOTHING"
    return int(conn.exec_driver_sql(sql, rows).rowcount)  # rows inserted, duplicates skipped


def _json(value: dict[str, Any]) -> str:
    # json.dumps with default arguments reuses one C encoder; custom separators build a new one
    return json.dumps(value) if value else "{}"


def _event_fact(ev: Any) -> dict[str, Any]:
    return {"id": ev.id, "kind": ev.kind, "observed_at": ev.observed_at,
            "t": ev.observed_at.timestamp(), "source": ev.source,
            "message": ev.message, "src_ip": ev.src_ip, "user": ev.user, "pid": ev.pid,
            "path": ev.path, "data": ev.data}


def _new_events(session: Session, batch: IngestBatch, engine: DetectionEngine, *, accepted: int,
                total: int, sensor_id: str, received: Any) -> list[dict[str, Any]]:
    """The events of the batch the rules must see: relevant kinds, stored just now."""
    relevant = [ev for ev in batch.events if ev.kind in engine.event_kinds]
    if not relevant or accepted == 0:
        return []
    if accepted < total:  # a batch partly sent before: only the events stored now count
        fresh: set[str] = set()
        ids = [ev.id for ev in relevant]
        for i in range(0, len(ids), _CHUNK):
            fresh.update(session.scalars(select(Event.uuid).where(
                Event.uuid.in_(ids[i:i + _CHUNK]), Event.sensor_id == sensor_id,
                Event.received_at == received)))
        relevant = [ev for ev in relevant if ev.id in fresh]
    return [_event_fact(ev) for ev in relevant]


def ingest(session: Session, *, sensor: SensorPrincipal, batch: IngestBatch,
           engine: DetectionEngine | None = None) -> IngestAck:
    """Store a batch once (events and snapshots already stored, by UUID, are skipped) and run
    the detection rules on what is new, in the same transaction."""
    now = utcnow()
    sqlite = session.get_bind().dialect.name == "sqlite"
    received = db_time(now, sqlite)
    rows = []
    for ev in batch.events:
        rows.append((
            ev.id,
            sensor.tenant_id, sensor.vm_id, sensor.sensor_id, ev.kind,
            db_time(ev.observed_at, sqlite), received, ev.source, ev.message, ev.src_ip,
            ev.user, ev.pid, ev.path, _json(ev.data),
        ))
    # duplicates (a re-sent batch, a UUID twice) are skipped by the unique index on uuid
    accepted = _insert_events(session, rows) if rows else 0
    changes: dict[str, list[Change]] = {}
    new_snaps = dup_snaps = 0
    for snap in batch.snapshots:
        if sensor.vm_id is None:
            raise Forbidden("this sensor reports for no VM: inventory snapshots are refused")
        if session.get(Snapshot, str(snap.id)) is not None:
            dup_snaps += 1
            continue
        added, changed, removed = apply_snapshot(
            session, vm_id=sensor.vm_id, kind=snap.kind, taken_at=snap.taken_at, full=snap.full,
            items=[item.model_dump(mode="json") for item in snap.items], removed=snap.removed,
            changes=changes.setdefault(snap.kind, [])
            if engine is not None and snap.kind in engine.inventory_kinds else None,
        )
        session.add(Snapshot(id=str(snap.id), vm_id=sensor.vm_id, sensor_id=sensor.sensor_id,
                             kind=snap.kind, full=snap.full, taken_at=snap.taken_at,
                             received_at=now, added=added, changed=changed, removed=removed))
        new_snaps += 1
    if engine is not None:
        events = _new_events(session, batch, engine, accepted=accepted, total=len(rows),
                             sensor_id=sensor.sensor_id, received=now)
        if events or any(changes.values()):
            engine.run(session, Facts(
                vm_id=sensor.vm_id, tenant_id=sensor.tenant_id, sensor_id=sensor.sensor_id,
                events=events, changes={k: v for k, v in changes.items() if v}))
    ack = IngestAck(
        batch_id=batch.batch_id, accepted_events=accepted,
        duplicate_events=len(rows) - accepted, accepted_snapshots=new_snaps,
        duplicate_snapshots=dup_snaps,
    )
    audit(session, actor=sensor.actor, action="sensor.ingest", target_type="batch",
          target_id=batch.batch_id, detail=ack.model_dump(mode="json", exclude={"batch_id"}))
    return ack


def apply_snapshot(
    session: Session, *, vm_id: int, kind: str, taken_at: datetime, full: bool,
    items: list[dict[str, Any]], removed: list[str], changes: list[Change] | None = None,
) -> tuple[int, int, int]:
    """Fold a snapshot into the current inventory; changed items keep their old version.

    ``changes``, when given, receives every added or changed item (for the rules).
    """
    current = {
        row.key: row
        for row in session.scalars(
            select(InventoryItem).where(
                InventoryItem.vm_id == vm_id, InventoryItem.kind == kind,
                InventoryItem.removed_at.is_(None),
            )
        )
    }
    incoming = {item["key"]: item for item in items}
    gone = set(current) - set(incoming) if full else set(removed) & set(current)
    new_rows = []
    n_added = n_changed = 0
    for key, item in incoming.items():
        old = current.get(key)
        if old is not None:
            if old.data == item:
                continue
            gone.add(key)
            n_changed += 1
        else:
            n_added += 1
        if changes is not None:
            changes.append(Change(item=item, old=old.data if old is not None else None,
                                  taken_at=taken_at))
        new_rows.append({"vm_id": vm_id, "kind": kind, "key": key, "data": item,
                         "first_seen": taken_at, "removed_at": None})
    closing = [current[k].id for k in gone]
    for i in range(0, len(closing), _CHUNK):
        session.execute(update(InventoryItem).where(InventoryItem.id.in_(closing[i:i + _CHUNK]))
                        .values(removed_at=taken_at))
    if new_rows:
        session.execute(insert(InventoryItem), new_rows)
    return n_added, n_changed, len(gone) - n_changed


def complete_task(
    session: Session, *, sensor: SensorPrincipal, task_id: int, result: TaskResult
) -> Task:
    task = session.get(Task, task_id)
    if task is None or task.sensor_id != sensor.sensor_id:
        raise NotFound(f"no task {task_id} for this sensor")
    task.status = "done" if result.ok else "failed"
    task.completed_at = utcnow()
    task.error = result.error
    task.result = result.result.model_dump(mode="json") if result.result else None
    audit(session, actor=sensor.actor, action="task.complete", target_type="task",
          target_id=task_id, detail={"ok": result.ok, "kind": task.kind})
    return task
