"""Code injection and fileless execution: preloaded libraries, programs run from memory, from
world-writable scratch directories or from files deleted after they started."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from vigil.server.detect.base import Facts, Finding, Rule, RuleContext
from vigil.server.detect.rules._common import parse_time, process_evidence

#: world-writable scratch directories (names to match, not paths this code writes to)
SCRATCH_DIRS = ("/tmp/", "/var/tmp/", "/dev/shm/", "/run/shm/", "/dev/mqueue/")  # noqa: S108
#: where package managers replace binaries in place: a deleted one there is an upgrade
SYSTEM_DIRS = ("/usr/", "/bin/", "/sbin/", "/lib/", "/lib64/", "/opt/", "/snap/")
PRELOAD_VARS = ("LD_PRELOAD", "LD_AUDIT")


def _observed(item: dict[str, Any], ctx: RuleContext):  # noqa: ANN202
    return parse_time(item["start_time"]) if item.get("start_time") else ctx.now


class PreloadInjectionRule(Rule):
    """A process started with LD_PRELOAD or LD_AUDIT: the dynamic linker loads the named library
    into it before its own code — how user-land rootkits and credential stealers get in."""

    id = "ld-preload-injection"
    title = "Library injected with LD_PRELOAD"
    techniques = ("T1574.006", "T1055")
    tactic = "defense-evasion"
    severity = "high"
    controls = ("SI-3", "SI-4", "SI-7", "CM-7")
    evidence_fields = ("process", "variable", "library")
    inputs = ("processes",)

    def evaluate(self, facts: Facts, ctx: RuleContext) -> Iterator[Finding]:
        for change in facts.changes.get("processes", []):
            env = change.item.get("env") or {}
            for var in PRELOAD_VARS:
                if env.get(var):
                    item = change.item
                    yield Finding(
                        subject=f"{item.get('key')}:{var}",
                        observed_at=_observed(item, ctx),
                        reason=f"{item.get('name')} (pid {item['pid']}) runs with {var}={env[var]}",
                        evidence={"process": process_evidence(item), "variable": var,
                                  "library": env[var]},
                    )
                    break


class FilelessExecutionRule(Rule):
    """A program running from memory (memfd), from a file deleted after it started, or from
    /tmp, /var/tmp or /dev/shm: droppers run payloads from where anyone can write and erase them
    to leave nothing on disk."""

    id = "fileless-execution"
    title = "Program running from memory, a deleted file or a scratch directory"
    techniques = ("T1055",)
    tactic = "defense-evasion"
    severity = "high"
    controls = ("SI-3", "SI-4", "SI-7", "CM-7")
    evidence_fields = ("process", "where")
    inputs = ("processes",)

    def evaluate(self, facts: Facts, ctx: RuleContext) -> Iterator[Finding]:
        for change in facts.changes.get("processes", []):
            item = change.item
            exe = item.get("exe") or ""
            if not exe:
                continue
            if exe.startswith("/memfd:"):
                where = "memfd"
                why = f"runs from an anonymous memory file ({exe})"
            elif exe.startswith(SCRATCH_DIRS):
                where = "scratch-directory"
                why = f"runs from {exe}, a world-writable scratch directory"
                if item.get("exe_deleted"):
                    why += ", deleted since it started"
            elif item.get("exe_deleted") and not exe.startswith(SYSTEM_DIRS):
                where = "deleted-file"
                why = f"runs from {exe}, which was deleted after it started"
            else:
                continue
            yield Finding(
                subject=f"{item.get('key')}:{where}",
                observed_at=_observed(item, ctx),
                reason=f"{item.get('name')} (pid {item['pid']}) {why}",
                evidence={"process": process_evidence(item), "where": where},
            )
