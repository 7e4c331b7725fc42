"""Finding the kernel ELF inside a vmlinuz, whatever it was compressed with."""

from __future__ import annotations

import gzip
import lzma
import struct
from pathlib import Path

import lz4.block
import pytest

from vigil.vmi.kernel import Kernel, KernelError, vmlinux_from

#: a stand-in for the kernel ELF: its magic, then enough bytes for several LZ4 blocks
ELF = b"\x7fELF\x02\x01\x01" + bytes(range(256)) * 40_000


def _bzimage(payload: bytes) -> bytes:
    """A bzImage's shape: a setup header and decompressor code, then the compressed kernel,
    then its uncompressed size."""
    return b"MZ" + b"\x90" * 5000 + payload + struct.pack("<I", len(ELF))


def _lz4_legacy(data: bytes) -> bytes:
    out = struct.pack("<I", 0x184C2102)
    for start in range(0, len(data), 8 << 20):
        block = lz4.block.compress(data[start:start + (8 << 20)], store_size=False)
        out += struct.pack("<I", len(block)) + block
    return out


@pytest.mark.parametrize(("name", "compress"), [
    ("lz4-legacy", _lz4_legacy),
    ("gzip", gzip.compress),
    ("xz", lambda d: lzma.compress(d, format=lzma.FORMAT_XZ)),
])
def test_the_kernel_is_found_whatever_its_compression(name: str, compress, tmp_path: Path) -> None:
    assert len(ELF) > 8 << 20  # two LZ4 blocks at least
    elf, how = vmlinux_from(_bzimage(compress(ELF)))
    assert how == name and elf == ELF


def test_an_elf_is_taken_as_it_is() -> None:
    assert vmlinux_from(ELF) == (ELF, "none")


def test_not_a_kernel_says_so(tmp_path: Path) -> None:
    with pytest.raises(KernelError, match="no compressed kernel ELF"):
        vmlinux_from(b"MZ" + b"\0" * 10_000)
    with pytest.raises(KernelError, match="cannot read"):
        Kernel.load(tmp_path / "missing")
