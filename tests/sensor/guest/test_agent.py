"""The whole sensor against a real HTTP server that speaks the protocol and validates it.

The server here is a small stand-in for Vigil's (which is built elsewhere): it checks every
request with vigil.protocol.models, deduplicates events by id like the real one, and can be told
to fail, to refuse big batches or to revoke the sensor.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil
import pytest
from pydantic import ValidationError

import vigil.sensor.guest
from vigil.protocol import ENROLL_PATH, HEARTBEAT_PATH, INGEST_PATH
from vigil.protocol.models import (
    EnrollRequest,
    HeartbeatRequest,
    IngestBatch,
    TaskResult,
)
from vigil.sensor.guest.agent import GuestSensor, SensorConfig
from vigil.sensor.guest.collectors import CollectorContext
from vigil.sensor.guest.errors import ConfigurationError, CredentialsRevoked
from vigil.sensor.guest.events import make_event
from vigil.sensor.guest.spool import Spool
from vigil.sensor.guest.state import StateDir
from vigil.sensor.guest.watch.proc_connector import ProcConnector

SRC = Path(vigil.sensor.guest.__file__).parents[3]
ENROLL_TOKEN = "enroll-token-0123456789"
SENSOR_TOKEN = "sensor-token-abcdef0123456789"
FAILED_LINE = "{now} vm sshd[{pid}]: Failed password for root from 203.0.113.7 port {port} ssh2\n"


class FakeServer:
    """Records what sensors send; answers like Vigil's sensor API."""

    def __init__(self) -> None:
        self.lock = threading.Condition()
        self.enrollments = 0
        self.events: dict[str, dict] = {}
        self.duplicates = 0
        self.snapshots: list[dict] = []
        self.heartbeats: list[dict] = []
        self.task_results: dict[int, dict] = {}
        self.tasks: list[dict] = []
        self.ingest_statuses: list[int] = []
        self.fail_ingests = 0
        self.not_found = 0
        self.max_items: int | None = None
        self.revoked = False
        self.invalid: list[str] = []
        handler = self._handler()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def wait_for(self, predicate, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        with self.lock:
            while not predicate(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.lock.wait(left)
            return True

    def kinds(self) -> list[str]:
        return [e["kind"] for e in self.events.values()]

    def answer(self, path: str, headers, body: dict) -> tuple[int, dict]:
        if path == ENROLL_PATH:
            EnrollRequest.model_validate(body)
            if body["enroll_token"] != ENROLL_TOKEN:
                return 401, {"detail": "invalid or expired enroll token"}
            self.enrollments += 1
            return 200, {
                "sensor_id": str(uuid.uuid4()),
                "token": SENSOR_TOKEN,
                "tenant": "acme",
                "vm_id": 1,
                "heartbeat_interval": 0.3,
            }
        if headers.get("Authorization") != f"Bearer {SENSOR_TOKEN}":
            return 401, {"detail": "unknown sensor token"}
        if self.revoked:
            return 401, {"detail": "sensor revoked"}
        now = datetime.now(UTC).isoformat()
        if path == HEARTBEAT_PATH:
            HeartbeatRequest.model_validate(body)
            self.heartbeats.append(body)
            tasks, self.tasks = self.tasks, []
            return 200, {"server_time": now, "heartbeat_interval": 0.3, "tasks": tasks}
        if path == INGEST_PATH:
            if self.not_found > 0:  # e.g. a proxy that does not know the path yet
                self.not_found -= 1
                self.ingest_statuses.append(404)
                return 404, {"detail": "Not Found"}
            batch = IngestBatch.model_validate(body)
            items = len(batch.events) + len(batch.snapshots)
            if self.fail_ingests > 0:
                self.fail_ingests -= 1
                self.ingest_statuses.append(503)
                return 503, {"detail": "database unavailable"}
            if self.max_items is not None and items > self.max_items:
                self.ingest_statuses.append(413)
                return 413, {"detail": "batch too large"}
            self.ingest_statuses.append(200)
            for event in body["events"]:
                if event["id"] in self.events:
                    self.duplicates += 1
                self.events[event["id"]] = event
            self.snapshots.extend(body["snapshots"])
            return 200, {
                "batch_id": body["batch_id"],
                "accepted_events": len(batch.events),
                "duplicate_events": 0,
                "accepted_snapshots": len(batch.snapshots),
                "duplicate_snapshots": 0,
            }
        if path.startswith("/api/v1/sensors/tasks/"):
            TaskResult.model_validate(body)
            self.task_results[int(path.split("/")[-2])] = body
            return 200, {}
        return 404, {"detail": "not found"}

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    try:
                        status, answer = server.answer(self.path, self.headers, body)
                    except ValidationError as exc:
                        server.invalid.append(f"{self.path}: {exc}")
                        server.ingest_statuses.append(422)
                        status, answer = 422, {"detail": str(exc)}
                    server.lock.notify_all()
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        return Handler


@pytest.fixture
def server():
    fake = FakeServer()
    yield fake
    fake.close()
    assert fake.invalid == []


class Running:
    """A GuestSensor running in a thread, with small intervals and its own temporary paths."""

    def __init__(
        self,
        tmp_path: Path,
        url: str,
        token: str | None = ENROLL_TOKEN,
        intervals: dict[str, float] | None = None,
    ) -> None:
        self.log = tmp_path / "auth.log"
        self.log.touch()
        (tmp_path / "cron.d").mkdir(exist_ok=True)
        (tmp_path / "passwd").write_text(f"root:x:0:0::{tmp_path}/root:/bin/sh\n")
        self.state_dir = tmp_path / "state"
        config = SensorConfig(
            server=url,
            state_dir=self.state_dir,
            enroll_token=token,
            extra_logs=[str(self.log)],
            intervals={"fast": 0.2, "process": 0.5, "inventory": 60} if intervals is None else intervals,
            retry_base=0.05,
            retry_cap=0.2,
            shutdown_timeout=3,
            http_timeout=3,
        )
        context = CollectorContext(
            state=StateDir(self.state_dir),
            extra_logs=[str(self.log)],
            auth_logs=(),
            use_journal=False,
            passwd_path=str(tmp_path / "passwd"),
            persistence_paths=[str(tmp_path / "cron.d")],
            integrity_logs=[],
            journal_dir=None,
        )
        self.sensor = GuestSensor(config, context=context)
        self.result: int | BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.result = self.sensor.run()
        except BaseException as exc:  # handed to the test
            self.result = exc

    def write_failures(self, count: int, first_port: int = 50000) -> None:
        now = datetime.now(UTC).isoformat()
        with open(self.log, "a") as handle:
            for n in range(count):
                handle.write(FAILED_LINE.format(now=now, pid=4000 + n, port=first_port + n))

    def stop(self) -> int | BaseException | None:
        self.sensor.stop()
        self.thread.join(timeout=15)
        assert not self.thread.is_alive()
        return self.result


def test_enroll_collect_send_live_query_and_clean_stop(tmp_path, server):
    running = Running(tmp_path, server.url)
    try:
        wanted = {"processes", "connections", "listening", "packages"}
        assert server.wait_for(
            lambda s: (
                s.enrollments == 1
                and "sensor_started" in s.kinds()
                and wanted <= {snap["kind"] for snap in s.snapshots}
                and s.heartbeats
            )
        )
        hb = server.heartbeats[-1]
        assert hb["resources"]["mem_total"] > 0 and hb["resources"]["sensor_rss"] > 0

        started = time.monotonic()
        running.write_failures(1)
        assert server.wait_for(lambda s: "ssh_login_failed" in s.kinds(), timeout=5)
        latency = time.monotonic() - started
        assert latency < 1.5, f"a security event took {latency:.2f}s to arrive"

        server.tasks.append(
            {
                "id": 7,
                "kind": "live_query",
                "params": {},
                "created_at": datetime.now(UTC).isoformat(),
            }
        )
        assert server.wait_for(lambda s: 7 in s.task_results)
        answer = server.task_results[7]
        assert answer["ok"] is True
        assert any(p["pid"] == os.getpid() for p in answer["result"]["processes"])
    finally:
        result = running.stop()
    assert result == 0
    assert server.heartbeats[-1]["shutting_down"] is True
    assert "sensor_stopping" in server.kinds()
    assert server.duplicates == 0
    assert stat.S_IMODE(os.stat(running.state_dir).st_mode) == 0o700
    credentials = running.state_dir / "credentials.json"
    assert stat.S_IMODE(os.stat(credentials).st_mode) == 0o600
    assert json.loads(credentials.read_text())["token"] == SENSOR_TOKEN

    # a restart uses the saved credentials: no token needed, no second enrollment
    beats = len(server.heartbeats)
    again = Running(tmp_path, server.url, token=None)
    try:
        assert server.wait_for(lambda s: len(s.heartbeats) > beats + 1)
    finally:
        assert again.stop() == 0
    assert server.enrollments == 1
    starts = [e for e in server.events.values() if e["kind"] == "sensor_started"]
    assert len(starts) == 2


def test_outage_and_oversized_batches_lose_nothing(tmp_path, server):
    server.fail_ingests = 4
    server.max_items = 3
    running = Running(tmp_path, server.url)
    try:
        assert server.wait_for(lambda s: s.enrollments == 1)
        running.write_failures(12)
        assert server.wait_for(lambda s: s.kinds().count("ssh_login_failed") == 12, timeout=15), (
            server.ingest_statuses
        )
    finally:
        assert running.stop() == 0
    assert 503 in server.ingest_statuses and 413 in server.ingest_statuses
    ports = sorted(e["data"]["port"] for e in server.events.values() if e["kind"] == "ssh_login_failed")
    assert ports == list(range(50000, 50012))


def test_a_refused_row_is_dropped_alone_and_a_404_loses_nothing(tmp_path, server):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    spool = Spool(state / "spool.sqlite")  # rows left by a previous run
    good = make_event("auth_other", message="spooled before the restart")
    bad = dict(make_event("auth_other"), kind="not_a_kind")
    spool.put_many([("event", good), ("event", bad)])
    spool.close()
    server.not_found = 2
    running = Running(tmp_path, server.url)
    try:
        assert server.wait_for(lambda s: good["id"] in s.events and "sensor_started" in s.kinds())
    finally:
        assert running.stop() == 0
    assert bad["id"] not in server.events
    assert server.ingest_statuses[:3] == [404, 404, 422]
    assert len(server.invalid) >= 1 and all("not_a_kind" in i for i in server.invalid)
    server.invalid.clear()  # refused on purpose


def test_unreachable_server_at_enrollment(tmp_path):
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    running = Running(tmp_path, f"http://127.0.0.1:{port}")
    running.thread.join(timeout=15)
    assert isinstance(running.result, ConfigurationError)
    assert "cannot enroll" in str(running.result) and "--server" in str(running.result)


def test_revoked_sensor_stops_with_a_clear_error(tmp_path, server):
    running = Running(tmp_path, server.url)
    assert server.wait_for(lambda s: s.heartbeats)
    server.revoked = True
    running.thread.join(timeout=10)
    assert isinstance(running.result, CredentialsRevoked)
    assert "sensor revoked" in str(running.result)
    assert "enroll again" in str(running.result)


def test_refused_enroll_token(tmp_path, server):
    running = Running(tmp_path, server.url, token="wrong-token-000000")
    running.thread.join(timeout=10)
    assert isinstance(running.result, ConfigurationError)
    assert "invalid or expired enroll token" in str(running.result)
    assert not (running.state_dir / "credentials.json").exists()


# --- the command line, as a real process ---------------------------------------------------


def _command(tmp_path: Path, url: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "vigil.sensor.guest.main",
        "--server",
        url,
        "--state-dir",
        str(tmp_path / "state"),
        "--fast-interval",
        "0.3",
        "--inventory-interval",
        "60",
        "--decoy-ssh-port",
        "0",
        "--decoy-http-port",
        "0",
        "--canary",
        str(tmp_path / "canary" / "credentials"),
        *extra,
    ]


def _env() -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(SRC))
    env.pop("VIGIL_ENROLL_TOKEN", None)
    return env


def test_cli_without_token_or_with_a_refused_one(tmp_path, server):
    result = subprocess.run(
        _command(tmp_path, server.url), capture_output=True, text=True, timeout=30, env=_env()
    )
    assert result.returncode == 78
    assert "--enroll-token" in result.stderr

    token_file = tmp_path / "token"
    token_file.write_text("not-the-right-token\n")
    result = subprocess.run(
        _command(tmp_path, server.url, "--enroll-token-file", str(token_file)),
        capture_output=True,
        text=True,
        timeout=30,
        env=_env(),
    )
    assert result.returncode == 78
    assert "invalid or expired enroll token" in result.stderr


def test_cli_runs_and_stops_cleanly_on_sigterm(tmp_path, server):
    token_file = tmp_path / "token"
    token_file.write_text(ENROLL_TOKEN + "\n")
    log = tmp_path / "secure.log"
    log.write_text(FAILED_LINE.format(now=datetime.now(UTC).isoformat(), pid=1, port=2))
    process = subprocess.Popen(
        _command(
            tmp_path,
            server.url,
            "--enroll-token-file",
            str(token_file),
            "--log",
            str(log),
            "--heartbeat-interval",
            "0.5",
        ),
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        assert server.wait_for(lambda s: "ssh_login_failed" in s.kinds() and s.heartbeats, timeout=15)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    stderr = process.stderr.read()
    assert "enrolled as sensor" in stderr
    assert server.heartbeats[-1]["shutting_down"] is True
    assert "sensor_stopping" in server.kinds()


def _processes_with(server: FakeServer, pid: int) -> bool:
    return any(
        item["pid"] == pid
        for snapshot in server.snapshots
        if snapshot["kind"] == "processes"
        for item in snapshot["items"]
    )


def test_a_new_process_and_an_auth_line_reach_the_server_within_a_second(tmp_path, server):
    """At the default intervals (processes 5 s, logs 2 s): kernel notifications, not polling."""
    running = Running(tmp_path, server.url, intervals={"inventory": 300})
    children = []
    try:
        assert server.wait_for(lambda s: _processes_with(s, os.getpid()), timeout=20)
        started = running.sensor.triggers.status if running.sensor.triggers else {}
        if started.get("process_events") != "proc connector" or started.get("file_events") != "inotify":
            pytest.skip(f"no kernel notifications here: {started}")
        time.sleep(1.0)
        process_latencies, auth_latencies = [], []
        for n in range(5):
            time.sleep(0.3)
            begin = time.monotonic()
            child = subprocess.Popen(["sleep", "30"])
            children.append(child)
            assert server.wait_for(lambda s, pid=child.pid: _processes_with(s, pid), timeout=10)
            process_latencies.append(time.monotonic() - begin)
            time.sleep(0.3)
            before = server.kinds().count("ssh_login_failed")
            begin = time.monotonic()
            running.write_failures(1, first_port=51000 + n)
            assert server.wait_for(lambda s, b=before: s.kinds().count("ssh_login_failed") > b, timeout=10)
            auth_latencies.append(time.monotonic() - begin)
        print(
            "\nnew process -> processes snapshot at the server: "
            + ", ".join(f"{x * 1000:.0f}" for x in process_latencies)
            + " ms\nauth log line -> event at the server: "
            + ", ".join(f"{x * 1000:.0f}" for x in auth_latencies)
            + " ms"
        )
        assert max(process_latencies) < 1.0
        assert max(auth_latencies) < 1.0
    finally:
        for child in children:
            child.kill()
            child.wait()
        assert running.stop() == 0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_idle_cpu_of_the_sensor_at_default_settings(tmp_path, server):
    """The whole sensor (decoys and notifications included) idles under 2 % of one core."""
    token_file = tmp_path / "token"
    token_file.write_text(ENROLL_TOKEN + "\n")
    command = [
        sys.executable,
        "-m",
        "vigil.sensor.guest.main",
        "--server",
        server.url,
        "--state-dir",
        str(tmp_path / "state"),
        "--enroll-token-file",
        str(token_file),
        "--heartbeat-interval",
        "10",
        "--decoy-bind",
        "127.0.0.1",
        "--decoy-ssh-port",
        str(_free_port()),
        "--decoy-http-port",
        str(_free_port()),
        "--canary",
        str(tmp_path / "canary" / "credentials"),
    ]
    process = subprocess.Popen(command, stderr=subprocess.DEVNULL, env=_env())
    try:
        connector = ProcConnector.open()
    except OSError:
        connector = None
    try:
        assert server.wait_for(lambda s: _processes_with(s, process.pid), timeout=30)
        time.sleep(3)  # the first full round of every collector is over
        if connector is not None:
            connector.read()
        sensor = psutil.Process(process.pid)
        before = sum(sensor.cpu_times()[:2])
        begin = time.monotonic()
        execs = 0
        while time.monotonic() - begin < 20:
            time.sleep(0.5)
            if connector is not None:
                execs += sum(1 for e in connector.read() if e.what == "exec")
        used = sum(sensor.cpu_times()[:2]) - before
        share = used / (time.monotonic() - begin) * 100
        print(f"\nsensor: {share:.2f} % of one core over 20 s ({used:.3f} s CPU, {execs} execs meanwhile)")
        # on a quiet machine the target is 2 %; a busy one (other test runs) makes it react more
        assert share < (2.0 if execs < 20 else 5.0)
    finally:
        if connector is not None:
            connector.close()
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
