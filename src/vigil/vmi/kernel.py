"""What a kernel image holds for introspection: the ELF inside a vmlinuz, its BTF, its kallsyms
and its banner, and the ISF made of them.

A distribution's ``vmlinuz`` is a bzImage: a small decompressor followed by the kernel ELF,
compressed (Debian's cloud kernel uses legacy-frame LZ4; others gzip, xz, zstd...). The ELF is
stripped of its symbol table but keeps ``.BTF`` (CONFIG_DEBUG_INFO_BTF) and the kallsyms tables
the kernel uses for its own backtraces, which ``vmlinux-to-elf`` reads back.
"""

from __future__ import annotations

import bz2
import hashlib
import io
import logging
import lzma
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from elftools.elf.elffile import ELFFile
from elftools.elf.sections import NoteSection

from vigil.errors import VigilError
from vigil.vmi.btf import BTF
from vigil.vmi.isf import build_isf

log = logging.getLogger(__name__)

ELF_MAGIC = b"\x7fELF"
LZ4_LEGACY_MAGIC = 0x184C2102
LZ4_LEGACY_BLOCK = 8 << 20
BANNER = re.compile(rb"Linux version \d+\.\d+[^\0\n]{0,400}\n?\0")


class KernelError(VigilError):
    """A kernel image this module cannot read, and why."""


def _lz4_legacy(data: bytes, start: int) -> bytes:
    import lz4.block  # the field's own LZ4; legacy frames are a list of LZ4 blocks

    out = bytearray()
    pos = start + 4
    while pos + 4 <= len(data):
        (size,) = struct.unpack_from("<I", data, pos)
        if size == LZ4_LEGACY_MAGIC:  # concatenated legacy streams
            pos += 4
            continue
        if size == 0 or pos + 4 + size > len(data):
            break
        try:
            out += lz4.block.decompress(data[pos + 4:pos + 4 + size],
                                        uncompressed_size=LZ4_LEGACY_BLOCK)
        except lz4.block.LZ4BlockError:
            break  # the kernel appends the uncompressed size after the last block
        pos += 4 + size
    return bytes(out)


def _zstd(data: bytes, start: int) -> bytes:
    try:
        import zstandard
    except ImportError as exc:
        raise KernelError("this kernel is compressed with zstd: pip install zstandard") from exc
    return bytes(zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data[start:])).read())


def _one_stream(make: Any) -> Any:
    """A decompressor that stops at the end of its stream (the bzImage goes on after it)."""
    def read(data: bytes, start: int) -> bytes:
        return bytes(make().decompress(data[start:]))
    return read


#: compressed payload signatures a bzImage may carry, and how to open them
COMPRESSIONS = (
    ("lz4-legacy", b"\x02\x21\x4c\x18", _lz4_legacy),
    ("gzip", b"\x1f\x8b\x08", _one_stream(lambda: zlib.decompressobj(16 + zlib.MAX_WBITS))),
    ("xz", b"\xfd7zXZ\x00", _one_stream(lambda: lzma.LZMADecompressor(lzma.FORMAT_XZ))),
    ("zstd", b"\x28\xb5\x2f\xfd", _zstd),
    ("bzip2", b"BZh91AY&SY", _one_stream(bz2.BZ2Decompressor)),
    ("lzma", b"\x5d\x00\x00\x00", _one_stream(lambda: lzma.LZMADecompressor(lzma.FORMAT_ALONE))),
)


def vmlinux_from(image: bytes) -> tuple[bytes, str]:
    """The kernel ELF inside a vmlinuz (or the image itself if it is one), and how it was
    compressed."""
    if image.startswith(ELF_MAGIC):
        return image, "none"
    for name, magic, opener in COMPRESSIONS:
        start = image.find(magic)
        while start >= 0:
            try:
                out = opener(image, start)
            except KernelError:
                raise
            except Exception:  # noqa: BLE001  (a false match of the magic: try the next)
                out = b""
            if out.startswith(ELF_MAGIC):
                return out, name
            start = image.find(magic, start + 1)
    raise KernelError("no compressed kernel ELF found in this image (not a Linux bzImage?)")


@dataclass
class Kernel:
    """A kernel's ELF, read for its BTF, symbols and banner."""

    elf: bytes
    compression: str = "none"
    _symbols: dict[str, int] | None = None

    @classmethod
    def load(cls, path: Path) -> Kernel:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise KernelError(f"cannot read {path}: {exc.strerror}") from exc
        return cls(*vmlinux_from(data))

    def _elffile(self) -> ELFFile:
        return ELFFile(io.BytesIO(self.elf))

    def btf(self) -> bytes:
        section = self._elffile().get_section_by_name(".BTF")
        if section is None:
            raise KernelError("this kernel has no .BTF section (built without "
                              "CONFIG_DEBUG_INFO_BTF): give an ISF or a debug kernel instead")
        return bytes(section.data())

    def read(self, address: int, size: int) -> bytes:
        """Bytes at a link-time virtual address, from the ELF's sections."""
        for section in self._elffile().iter_sections():
            start = section["sh_addr"]
            if start and start <= address < start + section["sh_size"] and \
                    section["sh_type"] != "SHT_NOBITS":
                offset = section["sh_offset"] + address - start
                return self.elf[offset:offset + size]
        raise KernelError(f"address {address:#x} is in no section of the kernel")

    def banner(self) -> bytes:
        """``linux_banner``: the text at its symbol (a kernel may hold other "Linux version"
        strings, e.g. a weak default), or the first banner-like string."""
        address = self.kallsyms().get("linux_banner")
        if address is not None:
            text = self.read(address, 1024).split(b"\0", 1)[0]
            if text.startswith(b"Linux version "):
                return text + b"\0"
        match = BANNER.search(self.elf)
        if match is None:
            raise KernelError("no 'Linux version' banner in this kernel")
        return match.group(0)

    def build_id(self) -> str | None:
        """The GNU build id (the ``.notes`` also hold Xen notes of the same type number)."""
        for section in self._elffile().iter_sections():
            if isinstance(section, NoteSection):
                for note in section.iter_notes():
                    if note["n_name"] == "GNU" and note["n_type"] == "NT_GNU_BUILD_ID":
                        return str(note["n_desc"])
        return None

    def kallsyms(self) -> dict[str, int]:
        """Symbol names to link-time addresses, from the kernel's own kallsyms tables."""
        if self._symbols is None:
            self._symbols = self._find_kallsyms()
        return self._symbols

    def _find_kallsyms(self) -> dict[str, int]:
        from vmlinux_to_elf.core.kallsyms import KallsymsFinder

        quiet = logging.getLogger()
        level = quiet.level
        quiet.setLevel(logging.WARNING)  # it prints its progress through the root logger
        try:
            finder = KallsymsFinder(self.elf, 64)
        except Exception as exc:  # noqa: BLE001  (its own error classes are many)
            raise KernelError(f"no kallsyms tables found in this kernel: {exc}") from exc
        finally:
            quiet.setLevel(level)
        symbols: dict[str, int] = {}
        for address, typed_name in zip(finder.kernel_addresses, finder.symbol_names, strict=False):
            name = typed_name[1:]
            symbols.setdefault(name, address)
        return symbols

    def isf(self) -> dict[str, Any]:
        """The Volatility ISF of this kernel."""
        btf = self.btf()
        symbols = self.kallsyms()
        banner = self.banner()
        sources = {"kallsyms+BTF of the kernel ELF": hashlib.sha256(self.elf).hexdigest()}
        return build_isf(BTF.parse(btf), symbols, banner, sources=sources)
