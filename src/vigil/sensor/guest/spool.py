"""The disk spool: everything collected waits here until the server has acknowledged it.

A SQLite file (WAL mode) in the state directory. Rows are taken oldest first and deleted only by
:meth:`Spool.ack`, after the server answered 200, so an outage or a crash loses nothing and a
re-sent batch carries the same event ids (the server deduplicates them). When the backlog grows
past its cap the oldest *snapshots* are dropped (a later full snapshot supersedes them); security
events are never dropped.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vigil.protocol import MAX_BATCH_BYTES, MAX_BATCH_EVENTS, MAX_BATCH_SNAPSHOTS

from .util import utc_now

SPOOL_KINDS = ("event", "snapshot")
DEFAULT_MAX_BACKLOG_BYTES = 512 * 1024 * 1024
#: Room left in a batch for its envelope and JSON separators.
_BATCH_MARGIN = 64 * 1024
_BATCH_NAMESPACE = uuid.UUID("5b0e6a3e-7d0f-4a55-9f59-0b6f3c2a9d41")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spool (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    size INTEGER NOT NULL
)
"""


@dataclass(frozen=True)
class SpoolRow:
    """One spooled event or snapshot."""

    row_id: int
    kind: str
    payload: dict[str, Any]
    size: int


class Spool:
    """A durable FIFO of events and snapshots, safe to share between threads."""

    def __init__(self, path: str | Path, *, max_backlog_bytes: int = DEFAULT_MAX_BACKLOG_BYTES) -> None:
        self.path = Path(path)
        self.max_backlog_bytes = max_backlog_bytes
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)
        self.path.chmod(0o600)
        row = self._db.execute("SELECT COALESCE(SUM(size), 0) FROM spool").fetchone()
        self._bytes = int(row[0])

    def put(self, kind: str, payload: dict[str, Any]) -> int:
        """Spool one event or snapshot; returns how many old snapshots had to be dropped."""
        return self.put_many([(kind, payload)])

    def put_many(self, rows: Iterable[tuple[str, dict[str, Any]]]) -> int:
        """Spool several rows in one transaction; returns how many old snapshots were dropped."""
        encoded = []
        for kind, payload in rows:
            if kind not in SPOOL_KINDS:
                raise ValueError(f"unknown spool kind {kind!r}")
            text = json.dumps(payload, separators=(",", ":"))
            encoded.append((kind, text, len(text.encode())))
        if not encoded:
            return 0
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("INSERT INTO spool (kind, payload, size) VALUES (?, ?, ?)", encoded)
                self._bytes += sum(size for _, _, size in encoded)
                dropped = self._enforce_cap()
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return dropped

    def _enforce_cap(self) -> int:
        dropped = 0
        while self._bytes > self.max_backlog_bytes:
            rows = self._db.execute(
                "SELECT id, size FROM spool WHERE kind = 'snapshot' ORDER BY id LIMIT 100"
            ).fetchall()
            if not rows:
                break
            self._db.executemany("DELETE FROM spool WHERE id = ?", [(r[0],) for r in rows])
            self._bytes -= sum(r[1] for r in rows)
            dropped += len(rows)
        return dropped

    def take(
        self,
        max_bytes: int = MAX_BATCH_BYTES - _BATCH_MARGIN,
        max_events: int = MAX_BATCH_EVENTS,
        max_snapshots: int = MAX_BATCH_SNAPSHOTS,
    ) -> list[SpoolRow]:
        """The oldest rows that fit in one batch (always at least one row when any is spooled)."""
        taken: list[SpoolRow] = []
        total = events = snapshots = 0
        with self._lock:
            cursor = self._db.execute("SELECT id, kind, payload, size FROM spool ORDER BY id")
            for row_id, kind, payload, size in cursor:
                is_event = kind == "event"
                if taken and (
                    total + size > max_bytes
                    or (is_event and events >= max_events)
                    or (not is_event and snapshots >= max_snapshots)
                ):
                    break
                taken.append(SpoolRow(row_id, kind, json.loads(payload), size))
                total += size
                events += is_event
                snapshots += not is_event
            cursor.close()
        return taken

    def ack(self, row_ids: Sequence[int]) -> None:
        """Delete rows the server has acknowledged."""
        if not row_ids:
            return
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for start in range(0, len(row_ids), 500):
                    chunk = list(row_ids[start : start + 500])
                    marks = ",".join("?" * len(chunk))
                    size = self._db.execute(
                        f"SELECT COALESCE(SUM(size), 0) FROM spool WHERE id IN ({marks})", chunk
                    ).fetchone()[0]
                    self._db.execute(f"DELETE FROM spool WHERE id IN ({marks})", chunk)
                    self._bytes -= int(size)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def count(self) -> int:
        """How many rows wait to be sent."""
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM spool").fetchone()[0])

    @property
    def backlog_bytes(self) -> int:
        """Bytes of JSON waiting to be sent."""
        return self._bytes

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()


def build_batch(rows: Sequence[SpoolRow]) -> dict[str, Any]:
    """An IngestBatch body for ``rows``; the same rows always get the same batch_id."""
    ids = [str(row.payload.get("id", row.row_id)) for row in rows]
    return {
        "batch_id": str(uuid.uuid5(_BATCH_NAMESPACE, ",".join(ids))),
        "sent_at": utc_now(),
        "events": [row.payload for row in rows if row.kind == "event"],
        "snapshots": [row.payload for row in rows if row.kind == "snapshot"],
    }
