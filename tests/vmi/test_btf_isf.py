"""BTF to ISF on a small BTF blob written here by the kernel's format (include/uapi/linux/btf.h):
every kind a kernel's BTF uses for data, checked field by field and against Volatility's own
ISF schema."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import jsonschema
import pytest
import volatility3

from vigil.vmi import btf as B
from vigil.vmi.isf import build_isf


class Writer:
    """Builds a BTF blob type by type (ids from 1)."""

    def __init__(self) -> None:
        self.strings = bytearray(b"\0")
        self.types = bytearray()
        self.count = 0

    def name(self, text: str) -> int:
        if not text:
            return 0
        offset = len(self.strings)
        self.strings += text.encode() + b"\0"
        return offset

    def add(self, kind: int, name: str, size_or_type: int, vlen: int = 0, flag: bool = False,
            extra: bytes = b"") -> int:
        info = (int(flag) << 31) | (kind << 24) | vlen
        self.types += struct.pack("<III", self.name(name), info, size_or_type) + extra
        self.count += 1
        return self.count

    def int(self, name: str, size: int, signed: bool = False, char: bool = False) -> int:
        encoding = (B.INT_SIGNED if signed else 0) | (B.INT_CHAR if char else 0)
        return self.add(B.INT, name, size, extra=struct.pack("<I", (encoding << 24) | size * 8))

    def members(self, kind: int, name: str, size: int,
                fields: list[tuple[str, int, int, int]]) -> int:
        bitfields = any(bits for *_, bits in fields)
        extra = b"".join(struct.pack("<III", self.name(n), t, ((bits << 24) | off) if bitfields
                                     else off) for n, t, off, bits in fields)
        return self.add(kind, name, size, len(fields), bitfields, extra)

    def blob(self) -> bytes:
        header = struct.pack("<HBBIIIII", B.MAGIC, 1, 0, 24, 0, len(self.types),
                             len(self.types), len(self.strings))
        return header + bytes(self.types) + bytes(self.strings)


@pytest.fixture
def kernel_like() -> bytes:
    w = Writer()
    t_int = w.int("int", 4, signed=True)                       # 1
    t_ulong = w.int("long unsigned int", 8)                    # 2
    t_char = w.int("char", 1, signed=True, char=True)          # 3
    t_pid = w.add(B.TYPEDEF, "pid_t", t_int)                   # 4
    # list_head (5) points at itself through type 6, defined next: BTF allows forward ids
    t_list = w.members(B.STRUCT, "list_head", 16, [("next", 6, 0, 0), ("prev", 6, 64, 0)])
    t_list_ptr = w.add(B.PTR, "", t_list)                      # 6
    t_comm = w.add(B.ARRAY, "", 0, extra=struct.pack("<III", t_char, t_int, 16))   # 7
    t_const_ul = w.add(B.CONST, "", t_ulong)                   # 8
    t_state = w.add(B.ENUM, "task_state", 4, 2, extra=struct.pack(
        "<IiIi", w.name("TASK_RUNNING"), 0, w.name("TASK_DEAD"), 128))  # 9
    t_anon = w.members(B.UNION, "", 8, [("a", t_ulong, 0, 0), ("b", t_int, 0, 0)])  # 10
    t_fwd = w.add(B.FWD, "mm_struct", 0)                       # 11
    t_mm_ptr = w.add(B.PTR, "", t_fwd)                         # 12
    t_proto = w.add(B.FUNC_PROTO, "", t_int)                   # 13
    t_fn_ptr = w.add(B.PTR, "", t_proto)                       # 14
    w.members(B.STRUCT, "task_struct", 64, [
        ("pid", t_pid, 0, 0),
        ("flags", t_int, 32, 3),          # a 3-bit bitfield at bit 32
        ("exiting", t_int, 35, 1),        # the next bit
        ("tasks", t_list, 64, 0),
        ("comm", t_comm, 192, 0),
        ("stamp", t_const_ul, 320, 0),
        ("state", t_state, 384, 0),
        ("", t_anon, 448, 0),             # an anonymous union
        ("mm", t_mm_ptr, 448, 0),
        ("fn", t_fn_ptr, 448, 0),
    ])
    assert t_list_ptr == 6
    return w.blob()


def test_types_fields_and_offsets(kernel_like: bytes) -> None:
    isf = build_isf(B.BTF.parse(kernel_like), {"init_task": 0xFFFFFFFF82A1AA40,
                                               "linux_banner": 0xFFFFFFFF8211FA00},
                    b"Linux version 6.1.0-test (x@y) #1 SMP\n\0")
    task = isf["user_types"]["task_struct"]
    assert task["kind"] == "struct" and task["size"] == 64
    fields = task["fields"]
    assert fields["pid"] == {"type": {"kind": "base", "name": "int"}, "offset": 0}
    assert fields["flags"] == {"offset": 4, "type": {"kind": "bitfield", "bit_position": 0,
                                                     "bit_length": 3,
                                                     "type": {"kind": "base", "name": "int"}}}
    assert fields["exiting"]["type"]["bit_position"] == 3 and fields["exiting"]["offset"] == 4
    assert fields["tasks"] == {"type": {"kind": "struct", "name": "list_head"}, "offset": 8}
    assert fields["comm"]["type"] == {"kind": "array", "count": 16,
                                      "subtype": {"kind": "base", "name": "char"}}
    assert fields["stamp"]["type"] == {"kind": "base", "name": "long unsigned int"}  # const seen through
    assert fields["state"]["type"] == {"kind": "enum", "name": "task_state"}
    assert isf["enums"]["task_state"] == {"size": 4, "base": "unsigned int",
                                          "constants": {"TASK_RUNNING": 0, "TASK_DEAD": 128}}
    anonymous = [f for f in fields.values() if f.get("anonymous")]
    assert len(anonymous) == 1 and anonymous[0]["offset"] == 56
    union = isf["user_types"][anonymous[0]["type"]["name"]]
    assert union["kind"] == "union" and set(union["fields"]) == {"a", "b"}
    assert fields["mm"]["type"] == {"kind": "pointer", "subtype": {"kind": "struct",
                                                                   "name": "mm_struct"}}
    assert fields["fn"]["type"] == {"kind": "pointer", "subtype": {"kind": "function"}}
    assert isf["user_types"]["list_head"]["fields"]["prev"] == {
        "type": {"kind": "pointer", "subtype": {"kind": "struct", "name": "list_head"}},
        "offset": 8}
    assert isf["base_types"]["char"]["kind"] == "char"
    assert isf["base_types"]["pointer"]["size"] == 8
    # symbols: addresses as linked, the types Volatility's plugins need, the banner's text
    assert isf["symbols"]["init_task"] == {"address": 0xFFFFFFFF82A1AA40,
                                           "type": {"kind": "struct", "name": "task_struct"}}
    banner = isf["symbols"]["linux_banner"]
    assert banner["type"]["count"] == len(b"Linux version 6.1.0-test (x@y) #1 SMP\n\0")


def test_the_isf_passes_volatilitys_schema(kernel_like: bytes) -> None:
    isf = build_isf(B.BTF.parse(kernel_like), {"init_task": 0xFFFFFFFF82A1AA40}, b"")
    schema_file = Path(volatility3.__file__).parent / "schemas" / "schema-6.2.0.json"
    jsonschema.validate(isf, json.loads(schema_file.read_text()))


def test_bad_blobs_are_refused_with_a_reason(kernel_like: bytes) -> None:
    with pytest.raises(B.BTFError, match="not BTF"):
        B.BTF.parse(b"\0" * 64)
    with pytest.raises(B.BTFError, match="too short"):
        B.BTF.parse(kernel_like[:10])
    truncated = kernel_like[:24] + kernel_like[24:40]
    with pytest.raises(B.BTFError, match="past the end"):
        B.BTF.parse(truncated)
    unknown = bytearray(kernel_like)
    struct.pack_into("<I", unknown, 24 + 4, 31 << 24)  # type 1 of a kind that does not exist
    with pytest.raises(B.BTFError, match="unknown BTF kind 31"):
        B.BTF.parse(bytes(unknown))
