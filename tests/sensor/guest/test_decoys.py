"""The decoys against real clients on loopback, and canary files read by real processes."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import threading
import time

import pytest

from vigil.protocol.models import SecurityEvent
from vigil.sensor.guest.decoys import Decoys, DecoySettings
from vigil.sensor.guest.decoys import listeners as listeners_module
from vigil.sensor.guest.decoys.canary import STATE_FILE
from vigil.sensor.guest.decoys.protocols import SSH_BANNER
from vigil.sensor.guest.decoys.ratelimit import RateLimiter, Verdict
from vigil.sensor.guest.state import StateDir


class Recorder:
    """Collects emitted events; every one must validate as a wire SecurityEvent."""

    def __init__(self) -> None:
        self.events: list[dict] = []
        self.cond = threading.Condition()

    def __call__(self, event: dict) -> None:
        SecurityEvent.model_validate(event)
        with self.cond:
            self.events.append(event)
            self.cond.notify_all()

    def wait(self, predicate, timeout: float = 3.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                found = [e for e in self.events if predicate(e)]
                if found or time.monotonic() >= deadline:
                    return found
                self.cond.wait(max(0.0, deadline - time.monotonic()))

    def kinds(self) -> list[str]:
        with self.cond:
            return [e["kind"] for e in self.events]


@pytest.fixture
def state(tmp_path):
    state = StateDir(tmp_path / "state")
    state.ensure()
    return state


@pytest.fixture
def decoys(state, tmp_path):
    recorder = Recorder()
    settings = DecoySettings(bind="127.0.0.1", ssh_port=0, http_port=0)
    running = Decoys(settings, state, recorder)
    running.start()
    yield running, recorder
    running.stop()


def _http(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
        client.sendall(request)
        answer = b""
        while chunk := client.recv(65536):
            answer += chunk
    return answer


def test_ssh_decoy_sends_a_banner_and_reports_the_client_version(decoys):
    running, recorder = decoys
    port = running.ports["ssh"]
    with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
        assert client.recv(256) == SSH_BANNER
        client.sendall(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n\x00\x00\x01\x14binary kex")
        assert client.recv(256) == b""  # it hangs up after the version line
    (event,) = recorder.wait(lambda e: e["kind"] == "decoy_connection")
    assert event["src_ip"] == "127.0.0.1"
    assert event["data"] == {
        "decoy": "ssh",
        "port": port,
        "payload": "SSH-2.0-OpenSSH_9.2p1 Debian-2",
        "complete": True,
    }


def test_http_decoy_serves_a_login_page_and_reports_credentials(decoys):
    running, recorder = decoys
    port = running.ports["http"]
    page = _http(port, b"GET /admin HTTP/1.1\r\nHost: vm\r\nUser-Agent: curl/7.88\r\n\r\n")
    assert page.startswith(b"HTTP/1.1 200 OK") and b"Admin console" in page
    assert b'type="password"' in page and b"Invalid credentials" not in page
    body = b"username=admin&password=" + b"p" * 300
    answer = _http(
        port,
        b"POST /login?next=/ HTTP/1.1\r\nHost: vm\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        + b"Content-Length: %d\r\n\r\n" % len(body)
        + body,
    )
    assert b"Invalid credentials" in answer
    (login,) = recorder.wait(lambda e: e["kind"] == "decoy_login")
    assert login["src_ip"] == "127.0.0.1" and login["user"] == "admin"
    assert login["data"]["decoy"] == "http" and login["data"]["port"] == port
    assert login["data"]["path"] == "/login"
    assert login["data"]["password"] == "p" * 128  # clipped
    requests = [e["data"] for e in recorder.events if e["kind"] == "decoy_connection"]
    assert [r["payload"] for r in requests] == ["GET /admin HTTP/1.1", "POST /login?next=/ HTTP/1.1"]
    assert requests[0]["user_agent"] == "curl/7.88"
    json_body = b'{"user": "root", "password": "toor"}'
    _http(
        port,
        b"POST /api/login HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
        % len(json_body)
        + json_body,
    )
    logins = recorder.wait(lambda e: e["kind"] == "decoy_login" and e["user"] == "root")
    assert logins[0]["data"]["password"] == "toor"


def test_hostile_clients_are_bounded(decoys, monkeypatch):
    running, recorder = decoys
    # no more than MAX_PER_SOURCE connections at once from one address
    held = [socket.create_connection(("127.0.0.1", running.ports["http"])) for _ in range(12)]
    try:
        time.sleep(0.2)
        open_ones = 0
        for client in held:
            client.settimeout(0.2)
            try:
                client.recv(1)  # b"": closed by the decoy at once
            except TimeoutError:
                open_ones += 1  # still open: waiting for a request
            except ConnectionResetError:
                pass
        assert open_ones == listeners_module.MAX_PER_SOURCE
    finally:
        for client in held:
            client.close()
    monkeypatch.setattr(listeners_module, "READ_TIMEOUT", 0.5)
    # a silent client times out and is still reported; garbage is made printable and bounded
    with socket.create_connection(("127.0.0.1", running.ports["ssh"]), timeout=5) as silent:
        silent.recv(256)
        assert silent.recv(256) == b""  # closed by the decoy at its deadline
    with socket.create_connection(("127.0.0.1", running.ports["ssh"]), timeout=5) as noisy:
        noisy.sendall(b"\xff\x00" * 20000)
        noisy.settimeout(5)
        try:
            while noisy.recv(65536):
                pass
        except ConnectionResetError:
            pass
    events = recorder.wait(lambda e: e["data"].get("complete") is False, timeout=3)
    assert events and events[0]["data"]["payload"] == ""
    payloads = [e["data"]["payload"] for e in recorder.events]
    assert any(p and set(p) == {"."} and len(p) <= 512 for p in payloads)


def test_a_scanner_cannot_flood_the_spool(decoys):
    running, recorder = decoys
    for _ in range(40):
        _http(running.ports["http"], b"GET / HTTP/1.0\r\n\r\n")
    time.sleep(0.3)
    events = [e for e in recorder.events if e["kind"] == "decoy_connection"]
    assert len(events) == 20
    assert events[-1]["data"]["rate_limited"] is True
    assert "suppressed" in events[-1]["message"]


def test_rate_limiter_windows_and_summary(monkeypatch):
    now = [100.0]
    monkeypatch.setattr("vigil.sensor.guest.decoys.ratelimit.time.monotonic", lambda: now[0])
    limiter = RateLimiter(limit=3, window=60, max_keys=4)
    verdicts = [limiter.check("a")[0] for _ in range(5)]
    assert verdicts == [Verdict.SEND, Verdict.SEND, Verdict.LAST, Verdict.DROP, Verdict.DROP]
    now[0] += 61
    assert limiter.check("a") == (Verdict.SEND, 2)  # the next window says what was dropped
    for key in "bcdefgh":  # a flood of sources forgets old ones instead of growing
        limiter.check(key)
    assert len(limiter._entries) <= 4


def test_ports_in_use_are_reported_not_fatal(state):
    taken = socket.create_server(("127.0.0.1", 0))
    recorder = Recorder()
    port = taken.getsockname()[1]
    running = Decoys(DecoySettings(bind="127.0.0.1", ssh_port=port, http_port=0), state, recorder)
    try:
        running.start()
        assert "ssh" not in running.ports and "http" in running.ports
        (error,) = [e for e in recorder.events if e["kind"] == "collector_error"]
        assert error["data"]["collector"] == "decoys" and str(port) in error["data"]["what"]
    finally:
        running.stop()
        taken.close()


# --- canaries ------------------------------------------------------------------------------


def _canaries(state, recorder, paths, *, defaults=(), use_inotify=True) -> Decoys:
    settings = DecoySettings(
        ssh_port=None,
        http_port=None,
        canaries=[str(p) for p in paths],
        default_canaries=[str(p) for p in defaults],
        use_inotify=use_inotify,
        poll_interval=0.1,
    )
    running = Decoys(settings, state, recorder)
    running.start()
    return running


def test_canary_is_planted_and_a_read_by_cat_is_reported(state, tmp_path):
    recorder = Recorder()
    canary = tmp_path / "home" / ".aws" / "credentials"
    running = _canaries(state, recorder, [canary])
    try:
        st = canary.stat()
        assert stat.S_IMODE(st.st_mode) == 0o600
        assert st.st_atime_ns < st.st_mtime_ns < time.time_ns() - 30 * 86400 * 10**9
        assert b"aws_secret_access_key" in canary.read_bytes()
        assert state.read_json(STATE_FILE)["planted"] == [str(canary)]
        time.sleep(0.5)
        recorder.events.clear()  # the test's own read above
        time.sleep(0.5)
        assert recorder.events == []  # planting and watching are silent
        started = time.monotonic()
        subprocess.run(["cat", str(canary)], stdout=subprocess.DEVNULL, check=True)
        (event,) = recorder.wait(lambda e: e["kind"] == "canary_accessed")
        print(f"\ncanary read reported after {time.monotonic() - started:.3f} s")
        assert event["path"] == str(canary)
        assert event["data"]["how"] == "read"
        # held open: the process is named
        holder = subprocess.Popen(["sh", "-c", f"exec 3<'{canary}'; cat <&3 >/dev/null; exec sleep 5"])
        try:
            found = recorder.wait(lambda e: e["data"].get("pid") == holder.pid)
            assert found and found[0]["data"]["process"] in ("sh", "sleep")
            assert found[0]["pid"] == holder.pid
        finally:
            holder.kill()
            holder.wait()
        time.sleep(0.4)
        recorder.events.clear()
        canary.unlink()
        (deleted,) = recorder.wait(lambda e: e["data"]["how"] == "deleted")
        assert deleted["path"] == str(canary)
        time.sleep(0.2)
        assert canary.exists()  # planted again
    finally:
        running.stop()


def test_existing_files_are_never_overwritten(state, tmp_path):
    recorder = Recorder()
    real = tmp_path / "real-credentials"
    real.write_text("mine\n")
    named = tmp_path / "named"
    named.write_text("a decoy of my own\n")
    running = _canaries(state, recorder, [named], defaults=[real])
    try:
        assert real.read_text() == "mine\n" and named.read_text() == "a decoy of my own\n"
        assert running.canaries is not None and running.canaries.paths == [str(named)]
        real.read_text()
        named.read_text()
        events = recorder.wait(lambda e: e["kind"] == "canary_accessed")
        assert [e["path"] for e in events] == [str(named)]
    finally:
        running.stop()
    # a restart keeps the sensor's own canaries (it knows it planted them) and adds none
    canary = tmp_path / "c" / "id_rsa.bak"
    running = _canaries(state, recorder, [], defaults=[canary])
    running.stop()
    running = _canaries(state, recorder, [], defaults=[canary])
    try:
        assert running.canaries is not None and running.canaries.paths == [str(canary)]
        assert b"OPENSSH PRIVATE KEY" in canary.read_bytes()
    finally:
        running.stop()


def test_canaries_without_inotify_use_atime_and_are_rearmed(state, tmp_path):
    recorder = Recorder()
    canary = tmp_path / "db.env"
    running = _canaries(state, recorder, [canary], use_inotify=False)
    try:
        time.sleep(0.3)
        assert recorder.events == []
        subprocess.run(["cat", str(canary)], stdout=subprocess.DEVNULL, check=True)
        if os.stat(canary).st_atime_ns <= os.stat(canary).st_mtime_ns:
            pytest.skip("this file system does not update atimes (noatime)")
        (read,) = recorder.wait(lambda e: e["kind"] == "canary_accessed")
        assert read["data"]["how"] == "read"
        time.sleep(0.3)
        assert len(recorder.events) == 1  # re-armed, not reported again
        subprocess.run(["cat", str(canary)], stdout=subprocess.DEVNULL, check=True)
        assert len(recorder.wait(lambda e: True, timeout=0) or []) >= 1
        assert len(recorder.wait(lambda e: recorder.events.index(e) == 1)) == 1
        with open(canary, "a") as handle:
            handle.write("x\n")
        assert recorder.wait(lambda e: e["data"]["how"] == "modified")
    finally:
        running.stop()
