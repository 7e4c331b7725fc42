"""The watchdog: finds sensors that went silent, and purges rule state whose window passed.

It runs in a thread of every server process, once a second by default. Looking costs one
read; it writes only when a sensor has just gone silent. With several server processes each
runs its own watchdog; the alert's dedup key makes sure a silence is raised once.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta

from sqlalchemy import func, select

from vigil.server.db.engine import Database
from vigil.server.db.models import Sensor, utcnow
from vigil.server.detect.engine import DetectionEngine, silent_sensor_facts
from vigil.server.detect.state import purge_expired

log = logging.getLogger("vigil.detect.watchdog")

MISSED_BEATS = 3
PURGE_EVERY = 300.0


class Watchdog:
    def __init__(self, db: Database, engine: DetectionEngine, *, interval: float = 1.0,
                 missed_beats: int = MISSED_BEATS) -> None:
        self.db = db
        self.engine = engine
        self.interval = interval
        self.missed_beats = missed_beats
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._raised: set[tuple[str, object]] = set()
        self._last_purge = 0.0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="vigil-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check()
            except Exception:  # a database hiccup must not end the watchdog
                log.exception("watchdog check failed")

    def check(self) -> int:
        """One look; returns how many silences were raised."""
        now = utcnow()
        with self.db.read() as session:
            shortest = session.scalar(select(func.min(Sensor.heartbeat_interval)).where(
                Sensor.revoked_at.is_(None), Sensor.stopped_at.is_(None)))
            if shortest is None:
                return 0
            cutoff = now - timedelta(seconds=self.missed_beats * shortest)
            rows = session.execute(
                select(Sensor.id, Sensor.tenant_id, Sensor.vm_id, Sensor.kind, Sensor.hostname,
                       Sensor.heartbeat_interval, Sensor.last_seen_at)
                .where(Sensor.revoked_at.is_(None), Sensor.stopped_at.is_(None),
                       Sensor.last_seen_at.is_not(None), Sensor.last_seen_at < cutoff)
            ).mappings().all()
        silent = []
        for row in rows:
            deadline = row["last_seen_at"] + timedelta(
                seconds=self.missed_beats * row["heartbeat_interval"])
            if deadline <= now and (row["id"], row["last_seen_at"]) not in self._raised:
                silent.append((dict(row), deadline))
        raised = 0
        for sensor, deadline in silent:
            with self.db.write() as session:
                current = session.scalar(select(Sensor.last_seen_at).where(
                    Sensor.id == sensor["id"], Sensor.stopped_at.is_(None)))
                if current != sensor["last_seen_at"]:
                    continue  # it spoke or said goodbye meanwhile
                raised += len(self.engine.run(session, silent_sensor_facts(sensor, deadline)))
            if len(self._raised) > 100_000:
                self._raised.clear()  # a memo only: the alert's dedup key keeps it raised once
            self._raised.add((sensor["id"], sensor["last_seen_at"]))
        if time.monotonic() - self._last_purge > PURGE_EVERY:
            self._last_purge = time.monotonic()
            with self.db.write() as session:
                purge_expired(session, now=now)
        return raised
