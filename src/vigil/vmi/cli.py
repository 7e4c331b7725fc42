"""``vigil vmi``: symbols for a kernel with no debug package, and memory images analysed."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def cmd_symbols(args: argparse.Namespace) -> int:
    from vigil.vmi.symbols import provision

    found = provision(Path(args.kernel), force=args.force)
    how = "cached" if found.derived_in is None else f"derived in {found.derived_in:.1f} s"
    print(f"{found.banner}\nbuild id {found.build_id or '-'}; {how}", file=sys.stderr)
    print(found.path)
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    from vigil.vmi.analysis import analyze_image, render_text

    report = analyze_image(Path(args.image), kernel=Path(args.kernel) if args.kernel else None)
    if args.format == "json":
        json.dump(report, sys.stdout, indent=2, default=str)
        print()
    else:
        print(render_text(report))
    return 0


def cmd_vms(args: argparse.Namespace) -> int:
    from vigil.vmi.qemu_driver import discover

    vms = discover()
    if args.format == "json":
        print(json.dumps([vm.as_dict() for vm in vms], indent=2))
        return 0
    if not vms:
        print("no QEMU VM runs on this host")
    for vm in vms:
        print(f"{vm.name}\tpid {vm.pid}\tuuid {vm.uuid or '-'}\t{vm.memory_mib or '?'} MiB\t"
              f"RAM file {vm.ram_file or '-'}\tQMP {vm.qmp_socket or '-'}")
    return 0


def cmd_acquire(args: argparse.Namespace) -> int:
    from vigil.vmi.qemu_driver import DriverError, acquire, copy_free_space_ok, find

    vm = find(args.vm)
    out = Path(args.output)
    if out.exists():
        raise DriverError(f"{out} exists: evidence is never overwritten, choose another name")
    copy_free_space_ok(out, vm)
    print(f"acquiring {vm.name} ({vm.memory_mib or '?'} MiB), paused meanwhile...",
          file=sys.stderr)
    got = acquire(vm, out)
    print(json.dumps(got.__dict__))
    return 0


def configure(sub: Any, add: Any) -> None:
    """Add ``vigil vmi`` to the main parser."""
    vmi = add(sub, "vmi", lambda a: 2, "Virtual machine introspection: kernel symbols and "
              "memory analysis with Volatility 3 (docs/introspection.md).")
    vsub = vmi.add_subparsers(dest="vmi_command", required=True, metavar="ACTION")
    p = add(vsub, "symbols", cmd_symbols, "Derive a Volatility ISF for a kernel from its own BTF "
            "and kallsyms (no debug package), or find it in ~/.cache/vigil/symbols; prints its "
            "path.")
    p.add_argument("kernel", metavar="VMLINUZ", help="the guest's kernel image (vmlinuz or vmlinux)")
    p.add_argument("--force", action="store_true", help="derive again even if cached")
    p = add(vsub, "analyze", cmd_analyze, "Analyse a memory image (raw, ELF core, LiME): "
            "processes, sockets, kernel modules and findings.")
    p.add_argument("image", metavar="IMAGE", help="the memory image")
    p.add_argument("--kernel", default=None,
                   help="the guest's vmlinuz, to derive symbols from (default: cached symbols)")
    p.add_argument("--format", choices=["text", "json"], default="text",
                   help="a report for people (default) or JSON")
    p = add(vsub, "vms", cmd_vms, "The QEMU VMs running on this host, found from their "
            "processes: name, SMBIOS UUID, memory, RAM file, QMP socket.")
    p.add_argument("--format", choices=["text", "json"], default="text",
                   help="a line per VM (default) or JSON")
    p = add(vsub, "acquire", cmd_acquire, "Acquire a running VM's memory to a file: the VM is "
            "paused through QMP while its RAM is copied and hashed (SHA-256), then resumed.")
    p.add_argument("vm", metavar="VM", help="the VM's name, SMBIOS UUID or QEMU pid")
    p.add_argument("output", metavar="OUTPUT", help="the image file to write (never overwritten)")
