"""The notifier: sends the outbox (pending deliveries), retries with backoff, gives up at last.

Each round claims due deliveries in a short write transaction (``FOR UPDATE SKIP LOCKED`` on
PostgreSQL, so several server processes never claim one twice; SQLite's single writer does
the same), counts the attempt and pushes ``next_attempt_at`` one lease ahead. It then sends
outside any transaction and records the outcome. A process that dies while sending leaves the
delivery pending with an expired lease: another round retries it (at least once, never lost).
"""

from __future__ import annotations

import logging
import random
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update

from vigil.config import Settings
from vigil.server.db.engine import Database
from vigil.server.db.models import NotificationChannel, NotificationDelivery, utcnow
from vigil.server.notify.base import Message, Outcome, make_channel

log = logging.getLogger("vigil.notify")

#: how long a claimed delivery belongs to its sender (longer than any send's timeouts)
LEASE_SECONDS = 60.0


@dataclass(frozen=True)
class Job:
    """A claimed delivery with what its channel needs; ``attempts`` counts this one."""

    delivery_id: int
    attempts: int
    event: str
    payload: dict[str, Any]
    channel_id: int
    kind: str
    target: str


def job_for(delivery: NotificationDelivery, channel: NotificationChannel) -> Job:
    return Job(delivery.id, delivery.attempts, delivery.event, dict(delivery.payload),
               channel.id, channel.kind, channel.target)


def backoff(attempts: int, *, base: float, cap: float) -> float:
    """Seconds to wait after the ``attempts``-th failure: base * 2**(attempts-1), capped, ±20%."""
    delay = min(cap, base * 2 ** max(0, attempts - 1))
    return min(cap, delay * random.uniform(0.8, 1.2))  # noqa: S311 - jitter, not a secret


def claim_due(db: Database, *, limit: int, max_attempts: int, lease: float = LEASE_SECONDS,
              now: datetime | None = None) -> list[Job]:
    """Claim up to ``limit`` due deliveries of enabled channels, oldest due first."""
    now = now or utcnow()
    due = (NotificationDelivery.status == "pending", NotificationDelivery.next_attempt_at <= now,
           NotificationChannel.enabled.is_(True))
    joined = (NotificationChannel, NotificationChannel.id == NotificationDelivery.channel_id)
    with db.read() as session:  # most rounds find nothing: no write transaction for them
        first = session.scalar(select(NotificationDelivery.id).join(*joined).where(*due).limit(1))
    if first is None:
        return []
    stmt = (
        select(NotificationDelivery, NotificationChannel)
        .join(*joined)
        .where(*due)
        .order_by(NotificationDelivery.next_attempt_at, NotificationDelivery.id)
        .limit(limit)
        # PostgreSQL: rows another process holds are skipped, not waited for (SQLite: no-op,
        # its write transaction is exclusive already)
        .with_for_update(skip_locked=True, of=NotificationDelivery)
    )
    jobs: list[Job] = []
    with db.write() as session:
        for delivery, channel in session.execute(stmt).all():
            if delivery.attempts >= max_attempts:  # its sender died during the last attempt
                delivery.status = "failed"
                delivery.last_error = ((delivery.last_error or "") +
                                       " (no outcome recorded for the last attempt)").strip()
                continue
            delivery.attempts += 1
            delivery.next_attempt_at = now + timedelta(seconds=lease)
            jobs.append(job_for(delivery, channel))
    return jobs


def send(job: Job, settings: Settings) -> Outcome:
    """Send one claimed delivery; whatever goes wrong becomes a failed outcome."""
    try:
        channel = make_channel(job.kind, channel_id=job.channel_id, target=job.target,
                               settings=settings)
        return channel.send(Message(job.delivery_id, job.event, job.payload))
    except Exception as exc:  # a bug or a bad row must not stop the other deliveries
        log.exception("notification delivery %s failed unexpectedly", job.delivery_id)
        return Outcome(False, None, f"internal error: {type(exc).__name__}: {exc}"[:500])


def record(db: Database, job: Job, outcome: Outcome, *, settings: Settings,
           final: bool = False, now: datetime | None = None) -> bool:
    """Store a send's outcome: delivered, retried later (with backoff) or failed.

    ``final`` gives up after this attempt whatever the count (test messages). The update
    only applies while the row is still this claim's (same attempt, still pending), so a
    sender whose lease expired cannot overwrite a newer attempt. Returns whether it applied.
    """
    now = now or utcnow()
    values: dict[str, Any] = {"response_status": outcome.response_status}
    if outcome.error:
        values["last_error"] = outcome.error
    if outcome.delivered:
        values.update(status="delivered", delivered_at=now)
    elif final or job.attempts >= settings.notify_max_attempts:
        values.update(status="failed")
    else:
        delay = backoff(job.attempts, base=settings.notify_retry_base,
                        cap=settings.notify_retry_cap)
        values.update(next_attempt_at=now + timedelta(seconds=delay))
    with db.write() as session:
        result = session.execute(
            update(NotificationDelivery)
            .where(NotificationDelivery.id == job.delivery_id,
                   NotificationDelivery.status == "pending",
                   NotificationDelivery.attempts == job.attempts)
            .values(**values)
        )
        applied = bool(getattr(result, "rowcount", 0))
    if not outcome.delivered:
        log.warning("notification delivery %s (attempt %s, channel %s) failed: %s%s",
                    job.delivery_id, job.attempts, job.channel_id, outcome.error,
                    " - giving up" if values.get("status") == "failed" else "")
    return applied


class Notifier:
    """A background thread that sends due deliveries every ``notify_interval`` seconds.

    ``start()`` and ``stop()`` bracket the server's lifetime; ``run_once()`` does one round
    (tests call it directly). Sends of one round run in parallel, at most ``workers`` at once.
    """

    def __init__(self, db: Database, settings: Settings, *, workers: int = 4,
                 lease: float = LEASE_SECONDS) -> None:
        self.db = db
        self.settings = settings
        self.workers = workers
        self.lease = lease
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self.running:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="vigil-notifier", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop after the sends in flight (each bounded by its channel's timeouts)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                log.warning("the notifier did not stop within %.0f s: its deliveries will be "
                            "retried when their lease expires", timeout)

    def run_once(self) -> int:
        """Claim due deliveries, send them, record the outcomes; returns how many were sent."""
        jobs = claim_due(self.db, limit=self.workers, lease=self.lease,
                         max_attempts=self.settings.notify_max_attempts)
        if not jobs:
            return 0
        with ThreadPoolExecutor(max_workers=len(jobs), thread_name_prefix="vigil-notify") as pool:
            futures = {pool.submit(send, job, self.settings): job for job in jobs}
            for future in as_completed(futures):
                job = futures[future]
                try:
                    record(self.db, job, future.result(), settings=self.settings)
                except Exception:  # the lease expires and the delivery is retried
                    log.exception("could not record the outcome of delivery %s", job.delivery_id)
        return len(jobs)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                sent = self.run_once()
            except Exception:  # e.g. the database is briefly unreachable: try again later
                log.exception("the notifier could not claim deliveries")
                sent = 0
            if sent < self.workers:  # a full round means more may be due: go on at once
                self._stop.wait(self.settings.notify_interval)
