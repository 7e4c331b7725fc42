"""``vigil lab``: build the guest image, bring VMs up and down, attack them."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from vigil.errors import VigilError

SCENARIO_HELP = ("bruteforce, reverse-shell, privesc, persistence, cover-tracks, or full "
                 "(all in order: the paper's case study)")


def cmd_build(args: argparse.Namespace) -> int:
    from vigil.lab.image import Builder, Mirror, Recipe, configured_mirror

    mirror = Mirror(args.mirror.rstrip("/"), args.suite or "bookworm") if args.mirror \
        else configured_mirror(args.suite)
    image = Builder(Recipe(mirror)).build(force=args.force)
    print(image.path)
    return 0


def _api_token(args: argparse.Namespace) -> str:
    if args.api_token_file:
        return Path(args.api_token_file).read_text().strip()
    token = args.api_token or os.environ.get("VIGIL_API_TOKEN", "")
    if not token:
        raise VigilError("give --api-token, --api-token-file or VIGIL_API_TOKEN "
                         "(an admin's or CSP's token: `vigil token api --user EMAIL`)")
    return str(token)


def cmd_up(args: argparse.Namespace) -> int:
    from vigil.lab import fleet

    location = fleet.Location(site=args.site, country=args.country, latitude=args.latitude,
                              longitude=args.longitude)
    state = fleet.up(server=args.server, api_token=_api_token(args), vms=args.vms,
                     tenant=args.tenant, memory_mib=args.memory, accel=args.accel,
                     directory=args.run_dir, location=location, timeout=args.timeout,
                     kernel=args.kernel)
    for vm in state.vms:
        print(f"{vm.name}\tvm {vm.vm_id}\tssh 127.0.0.1:{vm.ssh_port}\t{vm.accel}\t"
              f"sensor online after {vm.online_after} s")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from vigil.lab import fleet

    stopped = fleet.down(args.run_dir)
    if not stopped:
        print("the lab is not up", file=sys.stderr)
    for name, how in stopped:
        print(f"{name}\t{how}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from vigil.lab import fleet

    rows = fleet.status(args.run_dir)
    if args.format == "json":
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("the lab is not up")
        return 0
    columns = ["name", "vm_id", "pid", "qemu", "accel", "kernel", "ssh", "sensor", "uptime_s",
               "online_after_s", "alerts", "incidents"]

    def cell(value: Any) -> str:
        if isinstance(value, list):
            return ",".join(map(str, value)) or "-"
        return "-" if value is None else str(value)

    table = [columns] + [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(columns))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


def cmd_attack(args: argparse.Namespace) -> int:
    from vigil.lab import attack

    log = open(args.log, "a", encoding="utf-8") if args.log else None  # noqa: SIM115

    def emit(step: dict[str, Any]) -> None:
        line = json.dumps(step)
        print(line if args.json else attack.describe(step), flush=True)
        if log is not None:
            log.write(line + "\n")
            log.flush()

    try:
        attack.run_scenario(args.scenario, vm=args.vm, directory=args.run_dir, emit=emit)
    finally:
        if log is not None:
            log.close()
    return 0


def configure(sub: Any, add: Any) -> None:
    """Add ``vigil lab`` and its commands to the main parser."""
    lab = add(sub, "lab", lambda a: 2, "The lab: Debian guests under QEMU, attacked over the "
              "network (docs/lab.md).")
    lsub = lab.add_subparsers(dest="lab_command", required=True, metavar="ACTION")

    def run_dir(p: argparse.ArgumentParser) -> None:
        p.add_argument("--run-dir", type=Path, default=None,
                       help="where the lab keeps pids, sockets and logs "
                       "(default ~/.cache/vigil/lab/run or $VIGIL_LAB_RUN)")

    p = add(lsub, "build", cmd_build, "Build the guest image, or find it in the cache "
            "(~/.cache/vigil/lab). Needs root.")
    p.add_argument("--force", action="store_true", help="rebuild even if cached")
    p.add_argument("--mirror", default=None,
                   help="Debian mirror URL (default: the one apt is configured with)")
    p.add_argument("--suite", default=None, help="Debian release (default: this machine's)")

    p = add(lsub, "up", cmd_up, "Boot lab VMs under QEMU, registered with a Vigil server, and "
            "wait until each guest sensor is online.")
    p.add_argument("--server", required=True, help="the Vigil server's URL")
    p.add_argument("--api-token", default=None,
                   help="an admin's or CSP's API token (or --api-token-file, $VIGIL_API_TOKEN)")
    p.add_argument("--api-token-file", default=None, help="file holding the API token")
    p.add_argument("--vms", type=int, default=1, help="how many VMs (default 1)")
    p.add_argument("--tenant", default="default", help="tenant of the VMs (default: default)")
    p.add_argument("--memory", type=int, default=768, help="MiB of RAM per VM (default 768)")
    p.add_argument("--accel", choices=["auto", "kvm", "tcg"], default="auto",
                   help="auto probes KVM with a timeout and falls back to TCG (default)")
    p.add_argument("--kernel", choices=["cloud", "generic"], default="cloud",
                   help="Debian's cloud kernel (default) or its generic one")
    p.add_argument("--timeout", type=float, default=180.0,
                   help="seconds to wait for the sensors to be online (default 180)")
    p.add_argument("--site", default="Vigil lab", help="the host's site, for the map")
    p.add_argument("--country", default="DE", help="the host's country (ISO 3166 alpha-2)")
    p.add_argument("--latitude", type=float, default=50.11, help="the host's latitude")
    p.add_argument("--longitude", type=float, default=8.68, help="the host's longitude")
    run_dir(p)

    p = add(lsub, "down", cmd_down, "Stop every VM the lab started (clean power-down, then by "
            "pid) and remove their RAM files.")
    run_dir(p)

    p = add(lsub, "status", cmd_status, "The lab's VMs: QEMU's state and the sensor's status.")
    p.add_argument("--format", choices=["text", "json"], default="text",
                   help="a table (default) or JSON")
    run_dir(p)

    p = add(lsub, "attack", cmd_attack, "Attack a lab VM over the network, as the paper's "
            "attacker did, printing what was done and when (the ground truth).")
    p.add_argument("scenario", metavar="SCENARIO",
                   choices=["bruteforce", "reverse-shell", "privesc", "persistence",
                            "cover-tracks", "full"], help=SCENARIO_HELP)
    p.add_argument("--vm", required=True, help="the lab VM's name (see `vigil lab status`)")
    p.add_argument("--json", action="store_true", help="print one JSON object per action")
    p.add_argument("--log", default=None,
                   help="also append the ground truth to this file, one JSON object per action")
    run_dir(p)
