"""Rules ld-preload-injection and fileless-execution."""

from __future__ import annotations

from tests.server.detect.helpers import facts, proc, run

from vigil.server.detect.rules.injection import FilelessExecutionRule, PreloadInjectionRule


def test_ld_preload_in_the_environment() -> None:
    p = proc(1, "sshd", env={"LD_PRELOAD": "/tmp/libhook.so"})
    found = run(PreloadInjectionRule(), facts(processes=[p]))
    assert found[0].evidence["library"] == "/tmp/libhook.so"
    assert run(PreloadInjectionRule(), facts(processes=[proc(2, "bash", env={"HISTFILE": "x"})])) == []


def test_memfd_scratch_and_deleted_executables() -> None:
    items = [proc(1, "x", exe="/memfd:payload (deleted)"), proc(2, "y", exe="/dev/shm/y"),
             proc(3, "z", exe="/home/u/z", exe_deleted=True), proc(4, "t", exe="/tmp/t")]
    found = run(FilelessExecutionRule(), facts(processes=items))
    assert [f.evidence["where"] for f in found] == ["memfd", "scratch-directory", "deleted-file",
                                                    "scratch-directory"]


def test_upgraded_system_binary_and_files_in_tmp_are_fine() -> None:
    upgraded = proc(5, "nginx", exe="/usr/sbin/nginx", exe_deleted=True)
    editor = proc(6, "vim", exe="/usr/bin/vim.basic", cmdline=["vim", "/tmp/notes.txt"])
    assert run(FilelessExecutionRule(), facts(processes=[upgraded, editor])) == []
