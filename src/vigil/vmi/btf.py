"""BTF, the kernel's own compact type information (``.BTF`` in vmlinux, /sys/kernel/btf/vmlinux).

Only what a Volatility ISF needs is kept: sizes, fields with bit offsets, array counts, pointers,
enums, and the modifier and typedef chains to see through. The format is the kernel's
``include/uapi/linux/btf.h``; every kind up to ENUM64 (Linux 6.0) is read.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

MAGIC = 0xEB9F

INT, PTR, ARRAY, STRUCT, UNION, ENUM, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT = range(1, 12)
FUNC, FUNC_PROTO, VAR, DATASEC, FLOAT, DECL_TAG, TYPE_TAG, ENUM64 = range(12, 20)
#: kinds that only qualify or rename another type
TRANSPARENT = {TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG}

INT_SIGNED, INT_CHAR, INT_BOOL = 1, 2, 4


class BTFError(ValueError):
    """Not BTF, or BTF this reader does not understand."""


@dataclass
class Member:
    name: str
    type_id: int
    bit_offset: int
    bitfield_size: int = 0


@dataclass
class BTFType:
    id: int
    kind: int
    name: str
    #: size in bytes (INT, STRUCT, UNION, ENUM, DATASEC, FLOAT) or the referred type id
    size_or_type: int
    int_encoding: int = 0
    int_bits: int = 0
    array_type: int = 0
    array_count: int = 0
    members: list[Member] = field(default_factory=list)
    enum_values: dict[str, int] = field(default_factory=dict)
    enum_signed: bool = False
    fwd_union: bool = False


class BTF:
    """The types of one BTF blob, by id (0 is void)."""

    def __init__(self, types: list[BTFType]) -> None:
        self.types = types

    @classmethod
    def parse(cls, data: bytes) -> BTF:
        if len(data) < 24:
            raise BTFError("too short for a BTF header")
        magic, version, _flags, hdr_len = struct.unpack_from("<HBBI", data, 0)
        if magic != MAGIC:
            raise BTFError(f"not BTF (magic {magic:#x})")
        if version != 1:
            raise BTFError(f"BTF version {version} is not supported")
        type_off, type_len, str_off, str_len = struct.unpack_from("<IIII", data, 8)
        types_at = hdr_len + type_off
        strings = data[hdr_len + str_off: hdr_len + str_off + str_len]
        if types_at + type_len > len(data) or len(strings) != str_len:
            raise BTFError("BTF sections run past the end of the data")

        def text(offset: int) -> str:
            end = strings.find(b"\0", offset)
            return strings[offset:end if end >= 0 else None].decode("utf-8", "replace")

        types = [BTFType(0, 0, "void", 0)]
        pos, end = types_at, types_at + type_len
        u32 = struct.Struct("<I")
        while pos < end:
            name_off, info, size_or_type = struct.unpack_from("<III", data, pos)
            pos += 12
            kind, vlen, kind_flag = (info >> 24) & 0x1F, info & 0xFFFF, bool(info >> 31)
            t = BTFType(len(types), kind, text(name_off), size_or_type)
            if kind == INT:
                (encoding,) = u32.unpack_from(data, pos)
                t.int_encoding, t.int_bits = (encoding >> 24) & 0x0F, encoding & 0xFF
                pos += 4
            elif kind == ARRAY:
                t.array_type, _index, t.array_count = struct.unpack_from("<III", data, pos)
                pos += 12
            elif kind in (STRUCT, UNION):
                for _ in range(vlen):
                    m_name, m_type, m_off = struct.unpack_from("<III", data, pos)
                    pos += 12
                    if kind_flag:
                        t.members.append(Member(text(m_name), m_type, m_off & 0xFFFFFF,
                                                m_off >> 24))
                    else:
                        t.members.append(Member(text(m_name), m_type, m_off))
            elif kind == ENUM:
                t.enum_signed = kind_flag
                for _ in range(vlen):
                    e_name, value = struct.unpack_from("<Ii" if kind_flag else "<II", data, pos)
                    pos += 8
                    t.enum_values[text(e_name)] = value
            elif kind == ENUM64:
                t.enum_signed = kind_flag
                for _ in range(vlen):
                    e_name, lo, hi = struct.unpack_from("<III", data, pos)
                    pos += 12
                    value = (hi << 32) | lo
                    if kind_flag and value >= 1 << 63:
                        value -= 1 << 64
                    t.enum_values[text(e_name)] = value
            elif kind == FUNC_PROTO:
                pos += 8 * vlen
            elif kind == VAR:
                pos += 4
            elif kind == DATASEC:
                pos += 12 * vlen
            elif kind == DECL_TAG:
                pos += 4
            elif kind == FWD:
                t.fwd_union = kind_flag
            elif kind not in (PTR, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FLOAT, TYPE_TAG):
                raise BTFError(f"unknown BTF kind {kind} (type {t.id})")
            types.append(t)
        return cls(types)

    def __getitem__(self, type_id: int) -> BTFType:
        return self.types[type_id]

    def resolve(self, type_id: int) -> BTFType:
        """The type behind typedefs and qualifiers."""
        seen = 0
        t = self.types[type_id]
        while t.kind in TRANSPARENT:
            t = self.types[t.size_or_type]
            seen += 1
            if seen > 64:
                raise BTFError(f"type {type_id}: a loop of typedefs or qualifiers")
        return t

    def size_of(self, type_id: int) -> int:
        t = self.resolve(type_id)
        if t.kind in (INT, STRUCT, UNION, ENUM, ENUM64, FLOAT, DATASEC):
            return t.size_or_type
        if t.kind == PTR:
            return 8
        if t.kind == ARRAY:
            return t.array_count * self.size_of(t.array_type)
        return 0
