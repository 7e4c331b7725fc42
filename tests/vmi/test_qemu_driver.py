"""The QEMU driver reads a VM's identity, memory and sockets from its command line."""

from __future__ import annotations

from pathlib import Path

from vigil.lab.image import Image
from vigil.lab.qemu import VMSpec, command
from vigil.vmi.qemu_driver import parse_command_line


def test_the_labs_own_command_line_is_understood(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("vigil.lab.qemu.qemu_binary", lambda: "/usr/bin/qemu-system-x86_64")
    monkeypatch.setenv("VIGIL_LAB_RAM_DIR", str(tmp_path / "ram"))
    spec = VMSpec(name="lab-vm3", smbios_uuid="0c3e4a5b-1111-4222-8333-944455556666",
                  memory_mib=1024, ssh_port=2222, run_dir=tmp_path / "run",
                  image=Image(tmp_path / "image"), append="console=ttyS0", accel="tcg")
    vm = parse_command_line(4242, command(spec))
    assert vm.pid == 4242 and vm.name == "lab-vm3"
    assert vm.uuid == "0c3e4a5b-1111-4222-8333-944455556666"
    assert vm.ram_file == str(spec.ram_file) and vm.memory_mib == 1024
    assert vm.qmp_socket == str(spec.qmp_socket)


def test_other_shapes_of_command_lines() -> None:
    vm = parse_command_line(7, ["qemu-system-x86_64", "-name", "guest=web01,debug-threads=on",
                                "-m", "size=2G", "-uuid", "ABCDEF01-2345-6789-ABCD-EF0123456789",
                                "-qmp", "tcp:127.0.0.1:4444,server"])
    assert (vm.name, vm.memory_mib, vm.uuid) == ("web01", 2048,
                                                 "abcdef01-2345-6789-abcd-ef0123456789")
    assert vm.qmp_socket is None and vm.ram_file is None
    bare = parse_command_line(9, ["qemu-system-aarch64", "-m", "512"])
    assert (bare.name, bare.memory_mib) == ("qemu-9", 512)
