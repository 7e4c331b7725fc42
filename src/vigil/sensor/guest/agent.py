"""The guest sensor's main loop: enroll once, collect on schedule, spool, send, heartbeat.

Three threads: the collector loop runs each collector at its interval — or at once when the
kernel says something changed (:mod:`.watch`: process events, inotify) — and spools what it
finds; the sender posts spooled batches, woken at once when a security event is spooled or an
early collection produced anything (scheduled snapshots wait at most one fast interval); the
heartbeat thread reports resource usage and the spool backlog and runs the tasks the server
hands back (live queries). The decoys (:mod:`.decoys`) run in threads of their own and spool
their events through :meth:`GuestSensor.emit`. When the server is unreachable the sender backs
off exponentially while collection goes on into the spool.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vigil.protocol import HEARTBEAT_INTERVAL

from .client import Backoff, SensorClient, sensor_version
from .collectors import DEFAULT_INTERVALS, Collector, CollectorContext, create_collectors
from .decoys import Decoys, DecoySettings
from .diff import SnapshotDiffer
from .errors import (
    AuthRejected,
    ConfigurationError,
    CredentialsRevoked,
    RequestRejected,
    SensorError,
    ServerUnavailable,
)
from .events import make_event
from .hostinfo import enroll_request
from .schedule import Schedule
from .spool import Spool, SpoolRow, build_batch
from .state import Credentials, StateDir
from .util import utc_now
from .watch.triggers import Triggers

log = logging.getLogger("vigil.sensor.guest")

SPOOL_FILE = "spool.sqlite"
ENROLL_ATTEMPTS = 5
#: Statuses by which the server refuses a batch's content: halve it, drop a lone bad row.
REFUSED_CONTENT = (400, 413, 422)
#: Seconds to wait at shutdown for the collector loop, then for the sender and heartbeats.
JOIN_COLLECTOR = 10.0
JOIN_NETWORK = 3.0
MAX_UNREADABLE = 100
#: Collectors run in this order when several are due: the fast, security-relevant ones first.
_GROUP_ORDER = {"fast": 0, "process": 1, "inventory": 2}


@dataclass
class SensorConfig:
    """How one guest sensor runs (built from the command line by :mod:`.main`)."""

    server: str
    state_dir: Path
    enroll_token: str | None = None
    extra_logs: list[str] = field(default_factory=list)
    #: None: the interval the server asks for (else the protocol default).
    heartbeat_interval: float | None = None
    #: Interval per collector group ("fast", "process", "inventory"); missing: protocol default.
    intervals: dict[str, float] = field(default_factory=dict)
    shutdown_timeout: float = 5.0
    http_timeout: float = 15.0
    #: First and longest wait between retries while the server is unavailable.
    retry_base: float = 1.0
    retry_cap: float = 30.0
    #: Collect early on kernel notifications (process events, inotify); polling goes on too.
    event_driven: bool = True
    #: The decoys to run; None: none (the command line turns them on by default).
    decoys: DecoySettings | None = None


class GuestSensor:
    """One running guest sensor. :meth:`run` blocks until :meth:`stop` is called."""

    def __init__(
        self,
        config: SensorConfig,
        *,
        context: CollectorContext | None = None,
        collectors: Sequence[str] | None = None,
    ) -> None:
        self.config = config
        self.state = StateDir(config.state_dir)
        self.context = context or CollectorContext(state=self.state, extra_logs=list(config.extra_logs))
        self._collector_names = list(collectors) if collectors is not None else None
        self.stop_event = threading.Event()
        self.sender_wake = threading.Event()
        self.collectors: list[Collector] = []
        self.spool: Spool | None = None
        self.client: SensorClient | None = None
        self.differ = SnapshotDiffer(self.state)
        self.heartbeat_interval = config.heartbeat_interval or HEARTBEAT_INTERVAL
        self.credentials: Credentials | None = None
        self._fatal: SensorError | None = None
        self._seq = 0
        self._server_down = False
        self._logged_failures: set[tuple[str, str]] = set()
        self.schedule: Schedule | None = None
        self.triggers: Triggers | None = None
        self.decoys: Decoys | None = None

    # --- life cycle ----------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the sensor to shut down cleanly (safe from a signal handler)."""
        self.stop_event.set()
        self.sender_wake.set()
        if self.schedule is not None:
            self.schedule.close()

    def run(self) -> int:
        """Enroll if needed, then collect and send until stopped; returns the exit code 0.

        Raises ConfigurationError or CredentialsRevoked when the sensor cannot go on.
        """
        self.state.ensure()
        credentials = self.ensure_enrolled()
        if credentials is None:
            return 0  # stopped while waiting to enroll
        self.credentials = credentials
        self.client = SensorClient(
            self.config.server, self.credentials.token, timeout=self.config.http_timeout
        )
        try:
            self.spool = Spool(self.state.file(SPOOL_FILE))
        except (OSError, sqlite3.Error) as exc:
            raise ConfigurationError(
                f"cannot open the spool {self.state.file(SPOOL_FILE)}: {exc}; check the disk "
                "and the state directory's permissions"
            ) from None
        self.collectors = create_collectors(self.context, self._collector_names)
        self._start_watching()
        self.spool.put("event", self._started_event())
        self.sender_wake.set()
        log.info(
            "sensor %s running: server %s, state %s, %d collectors, %d rows spooled",
            self.credentials.sensor_id,
            self.config.server,
            self.state.path,
            len(self.collectors),
            self.spool.count(),
        )
        threads = [
            threading.Thread(target=self._collect_loop, name="vigil-collect", daemon=True),
            threading.Thread(target=self._send_loop, name="vigil-send", daemon=True),
            threading.Thread(target=self._heartbeat_loop, name="vigil-heartbeat", daemon=True),
        ]
        for thread in threads:
            thread.start()
        try:
            if self.decoys is not None:
                self.decoys.start()
            while not self.stop_event.wait(1.0):
                pass
        finally:
            self._shutdown(threads)
        if self._fatal is not None:
            raise self._fatal
        return 0

    def ensure_enrolled(self) -> Credentials | None:
        """The saved credentials, or new ones from the server (the enroll token is used once).

        None when :meth:`stop` was called while waiting for the server.
        """
        credentials = self.state.load_credentials()
        if credentials is not None:
            return credentials
        token = (self.config.enroll_token or "").strip()
        if not token:
            raise ConfigurationError(
                f"this sensor is not enrolled yet ({self.state.file('credentials.json')} does "
                "not exist) and no enroll token was given: pass --enroll-token or "
                "--enroll-token-file with a token created on the server"
            )
        client = SensorClient(self.config.server, timeout=self.config.http_timeout)
        backoff = Backoff(self.config.retry_base, min(16.0, self.config.retry_cap))
        for attempt in range(1, ENROLL_ATTEMPTS + 1):
            try:
                answer = client.enroll(enroll_request(token))
                break
            except (AuthRejected, RequestRejected) as exc:
                raise ConfigurationError(
                    f"the server refused to enroll this sensor (HTTP {exc.status}): {exc.detail}"
                ) from None
            except ServerUnavailable as exc:
                if attempt == ENROLL_ATTEMPTS:
                    raise ConfigurationError(
                        f"cannot enroll: {exc}; check --server and that the server is running"
                    ) from None
                delay = backoff.next_delay()
                log.warning("cannot enroll yet (%s); retrying in %.0f s", exc, delay)
                if self.stop_event.wait(delay):
                    return None
        try:
            credentials = Credentials(
                sensor_id=str(answer["sensor_id"]),
                token=str(answer["token"]),
                server=self.config.server,
                tenant=str(answer.get("tenant", "")),
                vm_id=answer.get("vm_id"),
            )
        except KeyError as exc:
            raise ConfigurationError(f"the server's enroll answer lacks {exc}") from None
        self.state.save_credentials(credentials)
        if self.config.heartbeat_interval is None and answer.get("heartbeat_interval"):
            self._adopt_interval(answer["heartbeat_interval"])
        log.info(
            "enrolled as sensor %s (tenant %s, vm %s)",
            credentials.sensor_id,
            credentials.tenant,
            credentials.vm_id,
        )
        return credentials

    def _start_watching(self) -> None:
        """The schedule, the kernel notifications that feed it, and the decoys (not started)."""
        scheduled = sorted(
            (c for c in self.collectors if c.produces != "resources"),
            key=lambda c: _GROUP_ORDER.get(c.interval_group, 9),
        )
        self.schedule = Schedule(
            {c.name: self.interval_of(c) for c in scheduled}, order=[c.name for c in scheduled]
        )
        if self.stop_event.is_set():
            self.schedule.close()
        if self.config.event_driven:
            by_name = {c.name: c for c in scheduled}
            self.triggers = Triggers(
                self.schedule.wake,
                process_collectors=[c.name for c in scheduled if c.wake_on_process_events],
                watched_paths=lambda: {name: c.watch_paths() for name, c in by_name.items()},
            )
            self.triggers.start()
        if self.config.decoys is not None:
            self.decoys = Decoys(self.config.decoys, self.state, self.emit)

    def emit(self, event: dict[str, Any]) -> None:
        """Spool one event from outside the collectors (the decoys) and send it at once."""
        assert self.spool is not None
        try:
            self.spool.put("event", event)
        except Exception:  # e.g. a full disk: the decoys must go on
            log.exception("cannot spool a %s event", event.get("kind"))
            return
        self.sender_wake.set()

    def _started_event(self) -> dict[str, Any]:
        privileged = os.geteuid() == 0
        unreadable = [] if privileged else ["other users' processes, sockets and files (not root)"]
        watching = dict(self.triggers.status) if self.triggers is not None else {}
        return make_event(
            "sensor_started",
            message=f"vigil guest sensor {sensor_version()} started",
            source="sensor",
            pid=os.getpid(),
            data={
                "version": sensor_version(),
                "privileged": privileged,
                "unreadable": unreadable,
                "collectors": [c.name for c in self.collectors],
                "process_events": watching.get("process_events", "polling"),
                "file_events": watching.get("file_events", "polling"),
            },
        )

    def _shutdown(self, threads: list[threading.Thread]) -> None:
        self.stop()
        collector_thread, *network_threads = threads
        collector_thread.join(timeout=JOIN_COLLECTOR)
        for part in (self.decoys, self.triggers):
            if part is not None:
                try:
                    part.stop()
                except Exception:  # stopping must not stop the shutdown
                    log.debug("stopping %s failed", type(part).__name__, exc_info=True)
        for thread in network_threads:  # a stuck request must not hold up the final flush
            thread.join(timeout=JOIN_NETWORK)
        assert self.spool is not None
        if self._fatal is None:
            self.spool.put(
                "event",
                make_event(
                    "sensor_stopping",
                    message="vigil guest sensor stopping",
                    source="sensor",
                    pid=os.getpid(),
                ),
            )
            self._final_flush()
        for collector in self.collectors:
            try:
                collector.close()
            except Exception:  # closing must not stop the shutdown
                log.debug("closing %s failed", collector.name, exc_info=True)
        backlog = self.spool.count()
        self.spool.close()
        log.info("sensor stopped (%d rows left in the spool)", backlog)

    def _final_flush(self) -> None:
        """Send what we can within ``shutdown_timeout``, then the last heartbeat."""
        assert self.client is not None and self.spool is not None and self.credentials
        timeout = max(1.0, self.config.shutdown_timeout)
        self.client = SensorClient(self.config.server, self.credentials.token, timeout=timeout)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                rows = self.spool.take()
                if not rows:
                    break
                self._deliver(rows)
            self.client.heartbeat(self._heartbeat_body(shutting_down=True))
        except SensorError as exc:
            log.warning("could not say goodbye to the server: %s", exc)

    # --- collecting ----------------------------------------------------------------------

    def interval_of(self, collector: Collector) -> float:
        """The collector's interval: the configured one for its group, else the default."""
        group = collector.interval_group
        return self.config.intervals.get(group) or DEFAULT_INTERVALS[group]

    def _collect_loop(self) -> None:
        assert self.schedule is not None
        by_name = {c.name: c for c in self.collectors}
        while not self.stop_event.is_set():
            chosen = self.schedule.next()
            if chosen is None:
                return
            name, triggered = chosen
            started, cpu = time.monotonic(), time.thread_time()
            self.run_collector(by_name[name], triggered=triggered)
            cost = time.thread_time() - cpu
            self.schedule.done(name, started, time.monotonic(), cost=cost, early=triggered)

    def run_collector(self, collector: Collector, *, triggered: bool = False) -> None:
        """Collect once, spool the result and commit the collector's progress.

        What an early (``triggered``) collection finds is sent at once, snapshots included.
        """
        assert self.spool is not None
        with collector.lock:
            try:
                result = collector.collect()
                failed = False
            except Exception as exc:  # a collector bug must not stop the sensor
                failed = True
                result = None
                error = f"{type(exc).__name__}: {exc}"
                if (collector.name, error) not in self._logged_failures:
                    self._logged_failures.add((collector.name, error))
                    log.exception("collector %s failed", collector.name)
                collector.report("collection", error, unreadable=False)
            rows: list[tuple[str, dict[str, Any]]] = [("event", event) for event in collector.take_events()]
            if collector.produces == "events" and result:
                rows.extend(("event", event) for event in result)
            elif collector.produces == "snapshot" and result is not None:
                snapshot = self.differ.diff(collector.name, result)
                if snapshot is not None:
                    rows.append(("snapshot", snapshot))
            if rows:
                try:
                    dropped = self.spool.put_many(rows)
                except Exception:  # e.g. a full disk: try again next time
                    log.exception("cannot spool what %s collected", collector.name)
                    if collector.produces == "snapshot":
                        self.differ.force_full(collector.name)
                    return
                if dropped:
                    log.warning("spool over its cap: dropped %d old snapshots", dropped)
                    self.differ.force_full()
                if triggered or any(kind == "event" for kind, _ in rows):
                    self.sender_wake.set()
            if failed:
                return  # keep the last committed progress: the next collect tries again
            try:
                collector.commit()
            except OSError as exc:
                log.warning("cannot save the progress of %s: %s", collector.name, exc)

    # --- sending -------------------------------------------------------------------------

    def _send_loop(self) -> None:
        assert self.spool is not None
        backoff = Backoff(self.config.retry_base, self.config.retry_cap)
        interval = self.config.intervals.get("fast") or DEFAULT_INTERVALS["fast"]
        while not self.stop_event.is_set():
            self.sender_wake.wait(timeout=interval)
            self.sender_wake.clear()
            if self.stop_event.is_set():
                return
            try:
                sent = self._send_pending()
            except ServerUnavailable as exc:
                self._note_outage(exc)
                self.stop_event.wait(backoff.next_delay())
                continue
            except CredentialsRevoked as exc:
                self._die(exc)
                return
            if self._server_down:
                log.info("server reachable again; %d rows sent from the spool", sent)
                self._server_down = False
            backoff.reset()

    def _send_pending(self) -> int:
        """Send batches until the spool is empty; returns how many rows were sent."""
        assert self.spool is not None
        sent = 0
        while not self.stop_event.is_set():
            rows = self.spool.take()
            if not rows:
                break
            self._deliver(rows)
            sent += len(rows)
        return sent

    def _deliver(self, rows: list[SpoolRow]) -> None:
        """Post ``rows`` as one batch and ack them; halves a batch the server refuses."""
        assert self.client is not None and self.spool is not None
        try:
            self.client.ingest(build_batch(rows))
        except AuthRejected as exc:
            if exc.revoked:
                raise self._revoked(exc) from None
            raise ServerUnavailable(str(exc)) from None
        except RequestRejected as exc:
            if exc.status not in REFUSED_CONTENT:
                # 404, 405...: a wrong URL or a proxy in the way, not bad data: keep it and retry
                raise ServerUnavailable(str(exc)) from None
            if len(rows) > 1:
                half = len(rows) // 2
                self._deliver(rows[:half])
                self._deliver(rows[half:])
                return
            log.error(
                "the server refused a spooled %s (%d bytes) and it is dropped: %s",
                rows[0].kind,
                rows[0].size,
                exc,
            )
        self.spool.ack([row.row_id for row in rows])

    def _revoked(self, exc: AuthRejected) -> CredentialsRevoked:
        return CredentialsRevoked(
            f"the server no longer accepts this sensor ({exc.detail}); remove "
            f"{self.state.file('credentials.json')} and enroll again with a new enroll token"
        )

    def _note_outage(self, exc: SensorError) -> None:
        if not self._server_down:
            log.warning("cannot reach the server (%s); spooling and retrying with backoff", exc)
            self._server_down = True
        else:
            log.debug("server still unavailable: %s", exc)

    def _die(self, exc: SensorError) -> None:
        log.error("%s", exc)
        self._fatal = exc
        self.stop()

    # --- heartbeats and tasks ------------------------------------------------------------

    def _heartbeat_body(self, *, shutting_down: bool = False) -> dict[str, Any]:
        assert self.spool is not None
        resources = None
        for collector in self.collectors:
            if collector.produces == "resources":
                try:
                    resources = collector.collect()
                except Exception:
                    log.debug("resources failed", exc_info=True)
        unreadable = sorted({u for c in self.collectors for u in c.unreadable})
        body = {
            "sent_at": utc_now(),
            "seq": self._seq,
            "resources": resources,
            "spool_backlog": self.spool.count(),
            "shutting_down": shutting_down,
            "interval": self.heartbeat_interval,
            "unreadable": [u[:255] for u in unreadable[:MAX_UNREADABLE]],
        }
        self._seq += 1
        return body

    def _heartbeat_loop(self) -> None:
        assert self.client is not None
        while not self.stop_event.is_set():
            try:
                answer = self.client.heartbeat(self._heartbeat_body())
            except ServerUnavailable as exc:
                self._note_outage(exc)
            except AuthRejected as exc:
                if exc.revoked:
                    self._die(self._revoked(exc))
                    return
                self._note_outage(exc)
            except SensorError as exc:
                log.warning("heartbeat refused: %s", exc)
            else:
                if self.config.heartbeat_interval is None:
                    self._adopt_interval(answer.get("heartbeat_interval"))
                for task in answer.get("tasks") or []:
                    self._run_task(task)
            self.stop_event.wait(self.heartbeat_interval)

    def _adopt_interval(self, value: Any) -> None:
        if isinstance(value, int | float) and 0.1 <= value <= 3600:
            self.heartbeat_interval = float(value)

    def _run_task(self, task: dict[str, Any]) -> None:
        assert self.client is not None
        task_id = task.get("id")
        if not isinstance(task_id, int):
            return
        if task.get("kind") == "live_query":
            try:
                body = {"ok": True, "result": self.live_query()}
            except Exception as exc:  # report it to the server instead
                body = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:8192]}
        else:
            body = {"ok": False, "error": f"unsupported task kind {task.get('kind')!r}"}
        try:
            self.client.task_result(task_id, body)
            log.info("task %s (%s) answered", task_id, task.get("kind"))
        except SensorError as exc:
            log.warning("cannot post the result of task %s: %s", task_id, exc)

    def live_query(self) -> dict[str, Any]:
        """The current processes and connections, collected now."""
        result: dict[str, Any] = {}
        for name in ("processes", "connections"):
            collector = next((c for c in self.collectors if c.name == name), None)
            if collector is None:
                result[name] = []
                continue
            with collector.lock:
                result[name] = collector.collect() or []
        return result
