"""The system collectors, run against this very machine with real processes and sockets."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import time

import psutil
import pytest

from vigil.sensor.guest.collectors import Collector, CollectorContext, create_collectors
from vigil.sensor.guest.collectors.connections import ConnectionsCollector
from vigil.sensor.guest.collectors.listening import ListeningCollector
from vigil.sensor.guest.collectors.packages import PackagesCollector, parse_dpkg_status
from vigil.sensor.guest.collectors.processes import ProcessesCollector, security_env
from vigil.sensor.guest.collectors.resources import ResourcesCollector
from vigil.sensor.guest.collectors.services import ServicesCollector, parse_list_units
from vigil.sensor.guest.collectors.socket_table import (
    PROTOCOLS,
    SocketTable,
    read_netlink,
    read_proc,
)
from vigil.sensor.guest.collectors.users import UsersCollector
from vigil.sensor.guest.state import StateDir


@pytest.fixture
def context(tmp_path):
    state = StateDir(tmp_path / "state")
    state.ensure()
    return CollectorContext(state=state)


def _sha256(path: str) -> str:
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def _find(items, **wanted):
    return [item for item in items if all(item.get(k) == v for k, v in wanted.items())]


def test_every_collector_is_registered_and_described():
    expected = {
        "processes",
        "connections",
        "listening",
        "services",
        "packages",
        "users",
        "resources",
        "authlog",
        "persistence",
        "logintegrity",
    }
    assert expected <= set(Collector.registry)
    for name, cls in Collector.registry.items():
        assert cls.name == name
        assert cls.__doc__ and cls.__doc__.strip(), name
        assert cls.produces in ("snapshot", "events", "resources")
        assert cls.interval_group in ("fast", "process", "inventory", "heartbeat")


@pytest.mark.parametrize("netlink", [True, False], ids=["netlink", "proc-net"])
def test_reverse_shell_like_process_is_seen_with_socket_stdio_and_its_connection(context, netlink):
    """sleep with a loopback TCP connection as stdin/stdout, as a reverse shell would have."""
    context.shared["socket_table"] = SocketTable(use_netlink=netlink)
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    server_side, _ = listener.accept()
    child = subprocess.Popen(["sleep", "30"], stdin=client, stdout=client)
    client.close()  # the child is now the only holder of the connecting socket
    try:
        items = ProcessesCollector(context).collect()
        (item,) = _find(items, pid=child.pid)
        real = os.path.realpath(shutil.which("sleep"))
        assert item["stdio_sockets"] == [0, 1]
        assert (item["stdio_raddr"], item["stdio_rport"]) == ("127.0.0.1", listener.getsockname()[1])
        assert item["parent_name"] == psutil.Process().name()
        assert item["parent_uid"] == os.getuid()
        assert item["parent_exe"] == os.path.realpath(psutil.Process().exe())
        assert item["exe"] == real
        assert item["sha256"] == _sha256(real)
        assert item["exe_deleted"] is False
        assert item["cmdline"] == ["sleep", "30"]
        assert item["ppid"] == os.getpid()
        assert item["uid"] == os.getuid() and item["euid"] == os.geteuid()
        created = psutil.Process(child.pid).create_time()
        assert item["key"] == f"{child.pid}:{int(created * 100)}"
        assert item["start_time"].endswith("+00:00")

        port = listener.getsockname()[1]
        connections = ConnectionsCollector(context).collect()
        (outgoing,) = _find(connections, proto="tcp", rport=port, raddr="127.0.0.1")
        assert outgoing["pid"] == child.pid
        assert outgoing["process_name"] == "sleep"
        assert outgoing["status"] == "ESTABLISHED"
        assert outgoing["uid"] == os.geteuid()
        (incoming,) = _find(connections, proto="tcp", lport=port, rport=outgoing["lport"])
        assert incoming["pid"] == os.getpid()
    finally:
        child.kill()
        child.wait()
        server_side.close()
        listener.close()


def test_unix_socket_stdio_has_no_peer_and_only_security_env_vars_leave(context):
    """A unix socket on stdio is a socket but has no remote address; the environment is filtered."""
    left, right = socket.socketpair()
    env = {
        "PATH": os.environ["PATH"],
        "LD_PRELOAD": "/tmp/evil.so",
        "HISTFILE": "/dev/null",
        "AWS_SECRET_ACCESS_KEY": "must-not-leave",
        "LD_AUDIT": "x" * 5000,
    }
    child = subprocess.Popen(["sleep", "30"], stdin=left, env=env)
    left.close()
    try:
        collector = ProcessesCollector(context)
        (item,) = _find(collector.collect(), pid=child.pid)
        assert item["stdio_sockets"] == [0]
        assert item["stdio_raddr"] is None and item["stdio_rport"] is None
        assert item["env"] == {"LD_PRELOAD": "/tmp/evil.so", "HISTFILE": "/dev/null", "LD_AUDIT": "x" * 1024}
        (mine,) = _find(collector.collect(), pid=os.getpid())
        assert set(mine["env"]) <= {"LD_LIBRARY_PATH", "LD_PRELOAD", "HISTFILE", "HISTSIZE"}
    finally:
        child.kill()
        child.wait()
        right.close()


def test_environ_parsing_is_cheap_and_exact():
    assert security_env(b"PATH=/bin\0HOME=/root\0") == {}
    raw = b"XLD_PRELOAD=no\0LD_PRELOAD=yes\0HISTSIZE=0\0HISTSIZEX=1\0"
    assert security_env(raw) == {"LD_PRELOAD": "yes", "HISTSIZE": "0"}


def test_deleted_executable_is_flagged_and_still_hashed(context, tmp_path):
    copy = tmp_path / "sleepy"
    shutil.copy2(os.path.realpath(shutil.which("sleep")), copy)
    expected = _sha256(str(copy))
    child = subprocess.Popen([str(copy), "30"])
    try:
        time.sleep(0.05)
        copy.unlink()
        (item,) = _find(ProcessesCollector(context).collect(), pid=child.pid)
        assert item["exe_deleted"] is True
        assert item["exe"] == str(copy)
        assert item["sha256"] == expected
    finally:
        child.kill()
        child.wait()


def test_executables_are_hashed_once(context):
    collector = ProcessesCollector(context)
    children = [subprocess.Popen(["sleep", "30"]) for _ in range(3)]
    try:
        collector.collect()
        hashed = len(collector._hashes)
        collector.collect()
        assert len(collector._hashes) == hashed  # nothing new to hash the second time
        stats = os.stat(os.path.realpath(shutil.which("sleep")))
        keys = [k for k in collector._hashes if k[1] == stats.st_ino and k[0] == stats.st_dev]
        assert len(keys) == 1
    finally:
        for child in children:
            child.kill()
            child.wait()


def test_connection_owner_is_rechecked_when_the_socket_changes_hands(context):
    listener = socket.create_server(("127.0.0.1", 0))
    collector = ConnectionsCollector(context)
    try:
        first = socket.create_connection(listener.getsockname())
        accepted, _ = listener.accept()
        items = collector.collect()
        assert _find(items, lport=first.getsockname()[1], pid=os.getpid())
        first.close()
        accepted.close()
        second = socket.create_connection(listener.getsockname())
        accepted2, _ = listener.accept()
        time.sleep(0.6)  # past the table's cache age
        items = collector.collect()
        assert _find(items, lport=second.getsockname()[1], pid=os.getpid(), status="ESTABLISHED")
        second.close()
        accepted2.close()
    finally:
        listener.close()


def test_listening_sockets_tcp_udp_and_ipv6(context):
    tcp = socket.create_server(("127.0.0.1", 0))
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    tcp6 = None
    if socket.has_ipv6 and os.path.exists("/proc/net/tcp6"):
        try:
            tcp6 = socket.create_server(("::1", 0), family=socket.AF_INET6)
        except OSError:
            tcp6 = None
    try:
        items = ListeningCollector(context).collect()
        by_key = {item["key"]: item for item in items}
        tcp_item = by_key[f"tcp:127.0.0.1:{tcp.getsockname()[1]}"]
        assert tcp_item["pid"] == os.getpid()
        assert tcp_item["process_name"] == psutil.Process().name()
        assert by_key[f"udp:127.0.0.1:{udp.getsockname()[1]}"]["pid"] == os.getpid()
        if tcp6 is not None:
            assert by_key[f"tcp6:::1:{tcp6.getsockname()[1]}"]["addr"] == "::1"
        # a listener is not a connection
        connections = ConnectionsCollector(context).collect()
        assert not _find(connections, lport=tcp.getsockname()[1], proto="tcp", raddr="0.0.0.0")
    finally:
        tcp.close()
        udp.close()
        if tcp6 is not None:
            tcp6.close()


def test_packages_include_dpkg_and_pip(context):
    if not os.path.exists(context.dpkg_status):
        pytest.skip("not a dpkg system")
    items = PackagesCollector(context).collect()
    dpkg = {item["name"] for item in items if item["manager"] == "dpkg"}
    assert {"libc6", "python3"} & dpkg
    pip = {item["name"].lower() for item in items if item["manager"] == "pip"}
    assert "psutil" in pip
    keys = [item["key"] for item in items]
    assert len(keys) == len(set(keys))
    assert "dpkg:libc6" in keys or "dpkg:python3" in keys


def test_dpkg_status_parsing_keeps_only_installed():
    text = (
        "Package: kept\nStatus: install ok installed\nVersion: 1.0\nArchitecture: amd64\n"
        "Description: x\n multi-line\n\n"
        "Package: gone\nStatus: deinstall ok config-files\nVersion: 2\nArchitecture: all\n"
    )
    assert list(parse_dpkg_status(text)) == [("kept", "1.0", "amd64")]


def test_services_parse_and_unavailable_systemd(context):
    sample = (
        "cron.service loaded active running Regular background program processing daemon\n"
        "● ghost.service not-found inactive dead ghost.service\n"
        "ssh.service loaded active running OpenBSD Secure Shell server\n"
    )
    items = parse_list_units(sample)
    assert [i["name"] for i in items] == ["cron.service", "ghost.service", "ssh.service"]
    assert items[1]["load_state"] == "not-found"
    assert items[2]["description"] == "OpenBSD Secure Shell server"

    collector = ServicesCollector(context)
    result = collector.collect()
    if result is None:  # no systemd here (a container): said once, no crash
        (event,) = collector.take_events()
        assert event["kind"] == "collector_error"
        assert event["data"]["collector"] == "services"
        assert collector.collect() is None
        assert collector.take_events() == []
    else:
        assert all(item["name"].endswith(".service") for item in result)


def test_users_and_resources(context):
    sessions = UsersCollector(context).collect()
    assert isinstance(sessions, list)
    usage = ResourcesCollector(context).collect()
    assert 0 <= usage["cpu_percent"] <= 100
    assert usage["mem_total"] > usage["mem_used"] > 0
    assert usage["sensor_rss"] > 0
    assert usage["disk_total"] > 0


def test_create_collectors_refuses_unknown_names(context):
    with pytest.raises(ValueError, match="unknown collectors"):
        create_collectors(context, ["processes", "nope"])


def test_netlink_and_proc_net_agree():
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    accepted, _ = listener.accept()
    udp6 = None
    if os.path.exists("/proc/net/udp6"):
        udp6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        udp6.bind(("::1", 0))
        udp6.connect(("::1", 9))
    try:
        try:
            read_netlink("tcp")
        except OSError as exc:
            pytest.skip(f"netlink sock_diag is not available here: {exc}")
        mine = {os.fstat(s.fileno()).st_ino for s in (listener, client, accepted, udp6) if s}
        for proto in PROTOCOLS:
            by_netlink = {s for s in read_netlink(proto) if s.inode in mine}
            by_proc = {s for s in read_proc("/proc", proto) if s.inode in mine}
            assert by_netlink == by_proc, proto
        seen = {s.inode for proto in PROTOCOLS for s in read_netlink(proto)}
        assert mine <= seen
    finally:
        for sock in (listener, client, accepted, udp6):
            if sock is not None:
                sock.close()
