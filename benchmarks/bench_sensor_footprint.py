"""The guest sensor's footprint at default settings on this machine: CPU and RSS.

A real `vigil sensor guest` reports to a real server for --duration seconds; its CPU time
(including the commands it runs, e.g. systemctl) and resident memory are sampled. Baseline in
the same run: a bare `python3` that only imports psutil and sleeps (the floor of any Python
sensor's memory).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from common import VIGIL, server, spawn, stop, vigil_cli


def cpu_seconds(p: psutil.Process) -> float:
    t = p.cpu_times()
    return t.user + t.system + t.children_user + t.children_system


def measure(proc: psutil.Process, duration: float, warmup: float) -> dict[str, float]:
    time.sleep(warmup)  # enrollment, first full snapshots, first hashes
    c0, t0 = cpu_seconds(proc), time.monotonic()
    rss = []
    while time.monotonic() - t0 < duration:
        rss.append(proc.memory_info().rss)
        time.sleep(1)
    cpu = (cpu_seconds(proc) - c0) / (time.monotonic() - t0) * 100
    return {"cpu_percent_of_one_core": round(cpu, 3), "rss_mib_median": round(
        sorted(rss)[len(rss) // 2] / 2**20, 1), "rss_mib_max": round(max(rss) / 2**20, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--duration", type=float, default=120.0)
    ap.add_argument("--warmup", type=float, default=20.0)
    args = ap.parse_args()
    with server(None) as srv, tempfile.TemporaryDirectory() as tmp:
        token = vigil_cli(srv["env"], "token", "enroll", "--tenant", "default")
        sensor = spawn([VIGIL, "sensor", "guest", "--server", f"http://127.0.0.1:{srv['port']}",
                        "--enroll-token", token, "--state-dir", str(Path(tmp) / "state")],
                       log=Path(tmp) / "sensor.log")
        bare = subprocess.Popen([sys.executable, "-c", "import psutil, time; time.sleep(3600)"])
        try:
            result = measure(psutil.Process(sensor.pid), args.duration, args.warmup)
            base = psutil.Process(bare.pid).memory_info().rss / 2**20
            print(json.dumps({"sensor": "guest", "duration_s": args.duration,
                              "processes_on_machine": len(psutil.pids()), **result,
                              "baseline_bare_python_psutil_rss_mib": round(base, 1),
                              "rss_ratio_to_baseline": round(result["rss_mib_median"] / base, 2)}),
                  flush=True)
        finally:
            bare.kill()
            bare.wait()
            stop(sensor)


if __name__ == "__main__":
    main()
