"""What memory says about a guest: processes (with a cross-view), sockets, kernel modules, and
the findings only memory can make (hidden processes and modules, hooks, shared credentials,
shell history).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from vigil.vmi.symbols import provision, symbols_dir
from vigil.vmi.volatility import Analysis, VolatilityError, check_plugin_versions


def _get(row: dict[str, Any], *names: str) -> Any:
    for name in names:
        if name in row:
            return row[name]
    return None


def processes(analysis: Analysis) -> list[dict[str, Any]]:
    """The task list (``linux.pslist``): pid, ppid, name, uid, euid (threads left out)."""
    out = []
    for row in analysis.run("linux.pslist.PsList"):
        if row.get("TID") not in (None, row.get("PID")):
            continue
        out.append({"pid": row["PID"], "ppid": row["PPID"], "name": row["COMM"],
                    "uid": row.get("UID"), "euid": row.get("EUID"),
                    "start_time": row.get("CREATION TIME")})
    return out


#: a task the kernel is tearing down (``PF_EXITING``), or already a zombie or dead: on its way out
#: of the pid table and the task list, not hidden
PF_EXITING = 0x4


def _dying(analysis: Analysis, offset: int) -> bool:
    try:
        task = analysis.kernel_object("task_struct", offset)
        return bool(int(task.flags) & PF_EXITING or int(task.exit_state))
    except Exception:  # noqa: BLE001  (unreadable: judge it as the plugins did)
        return False


def hashed_pids(analysis: Analysis) -> dict[int, str]:
    """Processes in the kernel's pid hash (``linux.pidhashtable``): the table ``kill`` and
    ``/proc`` look a pid up in, which a process cannot leave and keep running normally. The
    kernel adds and removes a task there and on the task list together, under one lock, so a
    difference is no race of a fork — unlike ``linux.psscan``, which also finds tasks being born.
    A task already exiting (a paused guest catches one each time it runs ``ps``) may be in one
    and not the other for a moment: it is left out."""
    return {row["PID"]: row["COMM"] for row in analysis.run("linux.pidhashtable.PIDHashTable")
            if row.get("TID") in (None, row.get("PID"))
            and not _dying(analysis, int(row["OFFSET"]))}


def sockets(analysis: Analysis) -> list[dict[str, Any]]:
    out = []
    seen: set[tuple[int, int]] = set()
    for row in analysis.run("linux.sockstat.Sockstat"):
        if row.get("Family") not in ("AF_INET", "AF_INET6"):
            continue
        if (row["PID"], row["FD"]) in seen:  # the same descriptor table, once per thread
            continue
        seen.add((row["PID"], row["FD"]))
        out.append({"pid": row["PID"], "process": row["Process Name"], "fd": row["FD"],
                    "family": row["Family"], "proto": row["Proto"],
                    "laddr": row["Source Addr"], "lport": _port(row["Source Port"]),
                    "raddr": row["Destination Addr"], "rport": _port(row["Destination Port"]),
                    "state": row["State"]})
    return out


def _port(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def modules(analysis: Analysis) -> list[dict[str, Any]]:
    return [{"name": _get(row, "Name", "Module Name"), "size": _get(row, "Size", "Module Size"),
             "offset": _get(row, "Offset", "Module Offset")}
            for row in analysis.run("linux.lsmod.Lsmod")]


def findings(analysis: Analysis, procs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What only memory shows."""
    found: list[dict[str, Any]] = []
    listed = {p["pid"] for p in procs}
    for pid, name in sorted(hashed_pids(analysis).items()):
        if pid not in listed and pid > 0:
            found.append({"kind": "hidden_process", "technique": "T1014", "pid": pid,
                          "name": name, "how": "in the kernel's pid hash, missing from the "
                                                "task list"})
    for row in analysis.run("linux.malware.check_modules.Check_modules"):
        found.append({"kind": "hidden_module", "technique": "T1014",
                      "name": _get(row, "Module Name", "Name"),
                      "how": "in sysfs, missing from the module list", "detail": row})
    for row in analysis.run("linux.malware.check_syscall.Check_syscall"):
        symbol = str(_get(row, "Handler Symbol", "Symbol") or "")
        if symbol in ("", "UNKNOWN") or "HOOKED" in symbol.upper():
            found.append({"kind": "syscall_hook", "technique": "T1014", "detail": row})
    start, end = analysis.kernel_range()
    for row in analysis.run("linux.malware.check_idt.Check_idt"):
        # A handler in no module and outside the kernel's image. (Inside it but with no symbol
        # is normal: a vector the kernel never set up keeps its early stub in .init.text.)
        address = row.get("Address") or 0
        if row.get("Module") is None and row.get("Symbol") is None and \
                not start <= address < end:
            found.append({"kind": "idt_hook", "technique": "T1014", "detail": row})
    for row in analysis.run("linux.malware.check_creds.Check_creds"):
        found.append({"kind": "shared_credentials", "technique": "T1068", "detail": row})
    return found


def bash_history(analysis: Analysis) -> list[dict[str, Any]]:
    return [{"pid": row["PID"], "process": row["Process"], "time": row.get("CommandTime"),
             "command": row["Command"]} for row in analysis.run("linux.bash.Bash")]


def analyze(analysis: Analysis) -> dict[str, Any]:
    """Everything above, with how long each part took."""
    timings: dict[str, float] = {}

    def timed(name: str, fn: Any, *args: Any) -> Any:
        started = time.perf_counter()
        try:
            return fn(*args)
        finally:
            timings[name] = round(time.perf_counter() - started, 3)

    procs = timed("processes", processes, analysis)
    dtb, virtual_offset, isf = analysis.kernel_location()
    return {
        "kernel": {"dtb": dtb, "virtual_offset": virtual_offset, "isf": isf},
        "processes": procs,
        "sockets": timed("sockets", sockets, analysis),
        "modules": timed("modules", modules, analysis),
        "findings": timed("findings", findings, analysis, procs),
        "bash_history": timed("bash_history", bash_history, analysis),
        "timings_s": timings,
    }


def analyze_image(image: Path, *, kernel: Path | None = None) -> dict[str, Any]:
    """``vigil vmi analyze``: a memory image with the kernel's derived (or cached) symbols."""
    if not image.exists():
        raise VolatilityError(f"no memory image at {image}")
    check_plugin_versions()
    if kernel is not None:
        provision(kernel)
    report = analyze(Analysis(image.resolve().as_uri(), [symbols_dir()]))
    report["image"] = str(image)
    return report


def render_text(report: dict[str, Any]) -> str:
    lines = [f"{report.get('image', '')}: {len(report['processes'])} processes, "
             f"{len(report['sockets'])} sockets, {len(report['modules'])} modules, "
             f"{len(report['findings'])} findings", "", "PID     PPID    UID     NAME"]
    for p in sorted(report["processes"], key=lambda p: p["pid"]):
        lines.append(f"{p['pid']:<7} {p['ppid']:<7} {p['uid'] if p['uid'] is not None else '-':<7} "
                     f"{p['name']}")
    lines += ["", "PID     PROTO  LOCAL                    REMOTE                   STATE"]
    for s in report["sockets"]:
        lines.append(f"{s['pid']:<7} {s['proto']:<6} {s['laddr']}:{s['lport']:<10} "
                     f"{s['raddr']}:{s['rport']:<10} {s['state']}")
    lines += ["", "MODULES: " + ", ".join(sorted(str(m["name"]) for m in report["modules"]))]
    lines += ["", "FINDINGS:" if report["findings"] else "FINDINGS: none"]
    for f in report["findings"]:
        lines.append(f"  {f['kind']} ({f['technique']}): "
                     + ", ".join(f"{k}={v}" for k, v in f.items() if k not in ("kind", "technique")))
    if report["bash_history"]:
        lines += ["", "BASH HISTORY IN MEMORY:"]
        lines += [f"  {h['pid']} {h['process']}: {h['command']}" for h in report["bash_history"]]
    return "\n".join(lines)
