"""Remote-access tools: installed as a package, running by name, or running under another name
with the executable hash of one."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from vigil.server.detect.base import Facts, Finding, Rule, RuleContext
from vigil.server.detect.rules._common import parse_time, process_evidence, program_names

#: program name -> the tool it belongs to (lower case; comm names are cut at 15 characters)
TOOL_PROGRAMS = {
    "anydesk": "AnyDesk", "teamviewer": "TeamViewer", "teamviewerd": "TeamViewer",
    "teamviewer_desk": "TeamViewer", "rustdesk": "RustDesk", "ngrok": "ngrok", "chisel": "chisel",
    "frpc": "frp", "frps": "frp", "ligolo": "ligolo", "ligolo-ng": "ligolo-ng",
    "ligolo-agent": "ligolo-ng", "ligolo-proxy": "ligolo-ng", "meshagent": "MeshAgent",
    "tacticalagent": "Tactical RMM", "rmmagent": "Tactical RMM", "screenconnect": "ScreenConnect",
    "connectwisecont": "ScreenConnect", "splashtop": "Splashtop", "srstreamer": "Splashtop",
    "dwagent": "DWService", "dwagsvc": "DWService", "tmate": "tmate", "sshx": "sshx",
    "gotty": "GoTTY", "ttyd": "ttyd", "bore": "bore", "rport": "rport", "rportd": "rport",
    "remotely": "Remotely", "atera_agent": "Atera", "zohoassist": "Zoho Assist",
    "cloudflared": "cloudflared tunnel",
}
TOOL_PACKAGES = {
    "anydesk": "AnyDesk", "teamviewer": "TeamViewer", "teamviewer-host": "TeamViewer",
    "rustdesk": "RustDesk", "ngrok": "ngrok", "ngrok-client": "ngrok", "meshagent": "MeshAgent",
    "tmate": "tmate", "ttyd": "ttyd", "gotty": "GoTTY", "cloudflared": "cloudflared tunnel",
    "dwservice": "DWService", "splashtop-streamer": "Splashtop", "frp": "frp", "chisel": "chisel",
}
#: where names learnt from running tools are remembered (tenant-wide)
LEARNT_KEY = "learnt-hashes"


def _tool_of(item: dict[str, Any]) -> str | None:
    for name in program_names(item):
        tool = TOOL_PROGRAMS.get(name.lower())
        if tool:
            return tool
    return None


class RemoteAccessToolRule(Rule):
    """A remote-access tool (AnyDesk, TeamViewer, RustDesk, ngrok, chisel, frp, ligolo,
    MeshAgent...) installed or running: attackers install them for a second way back in that
    looks like IT support. Processes are matched by name and by executable hash — known hashes
    from ``rat_hashes_file`` and the hashes of every tool seen running by name, so a renamed
    copy is still caught."""

    id = "remote-access-tool"
    title = "Remote-access tool"
    techniques = ("T1219",)
    tactic = "command-and-control"
    severity = "high"
    controls = ("CM-7", "CM-11", "SI-4", "AC-17")
    evidence_fields = ("tool", "matched_by", "process", "package")
    inputs = ("processes", "packages")

    def evaluate(self, facts: Facts, ctx: RuleContext) -> Iterator[Finding]:
        learnt = ctx.state(self, LEARNT_KEY, shared=True)
        hashes: dict[str, str] = learnt.data.setdefault("hashes", {})
        changed = False
        for change in facts.changes.get("packages", []):
            pkg = change.item
            tool = TOOL_PACKAGES.get(str(pkg.get("name", "")).lower())
            if tool is None or (change.old is not None and change.old.get("version") == pkg.get("version")):
                continue
            yield Finding(
                subject=f"package:{pkg.get('manager')}:{pkg.get('name')}:{pkg.get('version')}",
                observed_at=change.taken_at,
                reason=f"the {tool} package {pkg.get('name')} {pkg.get('version')} is installed",
                evidence={"tool": tool, "matched_by": "package", "package": pkg},
            )
        known = ctx.known_rat_hashes()
        for change in facts.changes.get("processes", []):
            item = change.item
            digest = item.get("sha256")
            tool = _tool_of(item)
            matched_by = "name"
            if tool is None and digest:
                if digest in hashes:
                    tool, matched_by = hashes[digest], "learnt-hash"
                elif digest in known:
                    tool, matched_by = "a known remote-access tool", "known-hash"
            if tool is None:
                continue
            if digest and matched_by == "name" and digest not in hashes and len(hashes) < 1000:
                hashes[digest] = tool
                changed = True
            observed = parse_time(item["start_time"]) if item.get("start_time") else ctx.now
            how = {"name": "by its name", "learnt-hash": "by the hash of a copy seen before",
                   "known-hash": "by its executable hash"}[matched_by]
            yield Finding(
                subject=f"process:{item.get('key')}",
                observed_at=observed,
                reason=f"{item.get('exe') or item.get('name')} (pid {item['pid']}) is {tool}, "
                f"recognised {how}",
                evidence={"tool": tool, "matched_by": matched_by, "process": process_evidence(item)},
            )
        if changed:
            learnt.save()
