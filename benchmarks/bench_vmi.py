"""Introspection: a warm live scan of a lab guest against cold Volatility runs on the same memory.

Boots lab VMs under QEMU (TCG here), registered with a real `vigil server`; then, in one run:

* symbol derivation from the guest's kernel alone (one-off, per kernel);
* the warm live scan (processes and their sockets) by the fast path, on the running guest's
  RAM file, `--scans` times; and Volatility's own warm `linux.pslist` + `linux.sockstat` in one
  long-lived context, for comparison;
* a cold `vol linux.pslist` + `vol linux.sockstat` (two processes, as a user runs them) on a
  copy of the same memory, `--cold-runs` times; the ratio cold / warm is the figure;
* memory acquisition of the first guest, paused, with SHA-256 computed as it is copied;
* scans per second one core sustains, round-robin across every VM booted (`--vms`).

Prints JSON lines: medians and p99 in milliseconds, ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import VIGIL, server

from vigil.lab.fleet import LabState
from vigil.lab.image import Image
from vigil.vmi.fastscan import FastScan, GuestMemory, KernelLocation
from vigil.vmi.qemu_driver import acquire, find
from vigil.vmi.symbols import load_isf
from vigil.vmi.volatility import Analysis

VOL = str(Path(sys.executable).with_name("vol"))


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def ms(value: float) -> float:
    return round(value * 1000, 2)


def scanner(ram: Path, symbols: Path) -> tuple[FastScan, Analysis]:
    """The fast path on a live RAM file, where Volatility located the kernel."""
    analysis = Analysis(ram.resolve().as_uri(), [symbols])
    analysis.run("linux.pslist.PsList")
    dtb, offset, url = analysis.kernel_location()
    return FastScan(GuestMemory(ram), load_isf(url), KernelLocation(dtb, offset)), analysis


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--vms", type=int, default=4)
    ap.add_argument("--memory", type=int, default=1024, help="MiB per guest (goal: 1 GiB)")
    ap.add_argument("--scans", type=int, default=200)
    ap.add_argument("--cold-runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=10.0, help="length of the scans/s run")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="vigil-bench-vmi-") as tmp, server(None) as srv:
        base = Path(tmp)
        env = {**srv["env"], "VIGIL_SYMBOLS": str(base / "symbols")}
        token = subprocess.run([VIGIL, "token", "api", "--user", "bench@example.org"], env=env,
                               check=True, capture_output=True, text=True).stdout.strip()
        (base / "token").write_text(token)
        run = base / "run"
        try:
            started = time.monotonic()
            subprocess.run([VIGIL, "lab", "up", "--server", f"http://127.0.0.1:{srv['port']}",
                            "--api-token-file", str(base / "token"), "--vms", str(args.vms),
                            "--memory", str(args.memory), "--run-dir", str(run), "--timeout",
                            "600"], env=env, check=True, capture_output=True)
            state = LabState.load(run)
            assert state is not None
            print(json.dumps({"bench": "lab boot", "vms": args.vms, "memory_mib": args.memory,
                              "accel": state.vms[0].accel,
                              "all_sensors_online_s": round(time.monotonic() - started, 1)}),
                  flush=True)
            kernel = Image(Path(state.image)).boot_files(state.vms[0].kernel)[0]
            started = time.monotonic()
            subprocess.run([VIGIL, "vmi", "symbols", str(kernel)], env=env, check=True,
                           capture_output=True)
            print(json.dumps({"bench": "symbols derived (one-off per kernel)",
                              "seconds": round(time.monotonic() - started, 2)}), flush=True)
            os.environ["VIGIL_SYMBOLS"] = env["VIGIL_SYMBOLS"]
            scans = [scanner(Path(vm.ram_file), base / "symbols") for vm in state.vms]
            fast, analysis = scans[0]
            warm: list[float] = []
            for _ in range(args.scans):
                t = time.perf_counter()
                tasks = fast.tasks()
                procs = [fast.process(task) for task in tasks]
                socks = fast.sockets(tasks)
                warm.append(time.perf_counter() - t)
            vol_warm: list[float] = []
            for _ in range(5):
                t = time.perf_counter()
                analysis.run("linux.pslist.PsList")
                analysis.run("linux.sockstat.Sockstat")
                vol_warm.append(time.perf_counter() - t)
            copy = base / "memory.raw"
            shutil.copyfile(state.vms[0].ram_file, copy)
            cold: list[float] = []
            for _ in range(args.cold_runs):
                t = time.perf_counter()
                for plugin in ("linux.pslist", "linux.sockstat"):
                    subprocess.run([VOL, "-q", "-s", str(base / "symbols"), "-f", str(copy),
                                    plugin], check=True, capture_output=True)
                cold.append(time.perf_counter() - t)
            print(json.dumps({
                "bench": "live scan of a running guest (processes + sockets)",
                "guest_mib": args.memory, "processes": len(procs), "sockets": len(socks),
                "fast_path_warm_p50_ms": ms(statistics.median(warm)),
                "fast_path_warm_p99_ms": ms(pct(warm, 99)),
                "volatility_warm_context_p50_ms": ms(statistics.median(vol_warm)),
                "cold_vol_pslist_plus_sockstat_p50_ms": ms(statistics.median(cold)),
                "ratio_cold_vol_over_fast_warm": round(statistics.median(cold)
                                                       / statistics.median(warm), 1),
                "ratio_volatility_warm_over_fast_warm": round(statistics.median(vol_warm)
                                                              / statistics.median(warm), 1),
            }), flush=True)
            taken = acquire(find(state.vms[0].smbios_uuid), base / "acquired.raw")
            print(json.dumps({"bench": "memory acquisition with SHA-256 at the source",
                              "guest_mib": args.memory, "seconds": taken.seconds,
                              "paused_s": taken.paused_s,
                              "mib_per_s": round(taken.size / (1 << 20) / taken.seconds)}),
                  flush=True)
            (base / "acquired.raw").unlink()
            count, deadline = 0, time.monotonic() + args.seconds
            cpu = time.process_time()
            while time.monotonic() < deadline:
                for scan, _ in scans:
                    tasks = scan.tasks()
                    [scan.process(task) for task in tasks]
                    scan.sockets(tasks)
                    count += 1
            used = time.process_time() - cpu
            print(json.dumps({"bench": "scans per second on one core, round-robin",
                              "vms": len(scans), "scans_per_s": round(count / args.seconds, 1),
                              "cpu_s_per_s": round(used / args.seconds, 2)}), flush=True)
        finally:
            subprocess.run([VIGIL, "lab", "down", "--run-dir", str(run)], env=env,
                           capture_output=True, check=False)


if __name__ == "__main__":
    main()
