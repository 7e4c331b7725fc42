"""Rule remote-access-tool: by package, by name, by known and by learnt hash."""

from __future__ import annotations

from tests.server.detect.helpers import MemoryContext, facts, proc, run

from vigil.server.detect.rules.remote_access import RemoteAccessToolRule

HASH = "1f" * 32


def test_package_and_process_names() -> None:
    pkg = {"key": "dpkg:anydesk", "manager": "dpkg", "name": "anydesk", "version": "6.3"}
    chisel = proc(10, "chisel", exe="/opt/c/chisel", sha256=HASH)
    found = run(RemoteAccessToolRule(), facts(packages=[pkg], processes=[chisel]))
    assert [(f.evidence["tool"], f.evidence["matched_by"]) for f in found] == [
        ("AnyDesk", "package"), ("chisel", "name")]


def test_a_renamed_copy_is_caught_by_its_learnt_hash() -> None:
    rule, ctx = RemoteAccessToolRule(), MemoryContext()
    run(rule, facts(processes=[proc(10, "ngrok", sha256=HASH)]), ctx)
    renamed = proc(11, "kworker-helper", exe="/var/lib/k/kworker-helper", sha256=HASH)
    (found,) = run(rule, facts(processes=[renamed]), ctx)
    assert found.evidence["matched_by"] == "learnt-hash" and found.evidence["tool"] == "ngrok"
    assert ctx.states[(rule.id, True, "learnt-hashes")].saved  # shared by the whole tenant


def test_known_hash_from_configuration_and_innocent_processes() -> None:
    ctx = MemoryContext(rat_hashes={HASH})
    found = run(RemoteAccessToolRule(), facts(processes=[proc(12, "svc", sha256=HASH)]), ctx)
    assert found[0].evidence["matched_by"] == "known-hash"
    assert run(RemoteAccessToolRule(), facts(processes=[proc(13, "sshd", sha256="00" * 32)])) == []
