"""The fast path's page walk and field lookup on memory laid out here by hand (its results on a
real guest are checked against Volatility's in tests/e2e/test_vmi.py)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from vigil.vmi.fastscan import GuestMemory, Layout, ScanError

PRESENT_RW = 0x3
LARGE = 0x80


def _put(mem: bytearray, table: int, index: int, value: int) -> None:
    struct.pack_into("<Q", mem, table + index * 8, value)


def test_four_level_walk_with_small_and_large_pages(tmp_path: Path) -> None:
    mem = bytearray(8 << 20)
    pml4, pdpt, pd, pt = 0x1000, 0x2000, 0x3000, 0x4000
    va = 0xFFFF_FFFF_8120_3456  # indices 511, 510, 9, 3
    _put(mem, pml4, 511, pdpt | PRESENT_RW)
    _put(mem, pdpt, 510, pd | PRESENT_RW)
    _put(mem, pd, 9, pt | PRESENT_RW)
    _put(mem, pt, 3, 0x7000 | PRESENT_RW)
    _put(mem, pd, 10, 0x400000 | PRESENT_RW | LARGE)  # a 2 MiB page
    image = tmp_path / "ram"
    image.write_bytes(bytes(mem))
    memory = GuestMemory(image)
    try:
        assert memory.translate(pml4, va) == 0x7000 + 0x456
        assert memory.translate(pml4, 0xFFFF_FFFF_8140_1234) == 0x400000 + 0x1234
        with pytest.raises(ScanError, match="not mapped"):
            memory.translate(pml4, 0xFFFF_FFFF_8160_0000)
    finally:
        memory.close()


def test_fields_are_found_through_anonymous_members() -> None:
    isf = {"symbols": {"init_task": {"address": 0xFFFFFFFF82A1AA40}}, "user_types": {
        "sock_common": {"kind": "struct", "size": 136, "fields": {
            "unnamed_field_0_0": {"offset": 0, "anonymous": True,
                                  "type": {"kind": "union", "name": "unnamed_union_7"}},
            "skc_family": {"offset": 16, "type": {"kind": "base", "name": "short unsigned int"}},
        }},
        "unnamed_union_7": {"kind": "union", "size": 8, "fields": {
            "skc_addrpair": {"offset": 0, "type": {"kind": "base", "name": "long long unsigned int"}},
            "unnamed_field_0_1": {"offset": 0, "anonymous": True,
                                  "type": {"kind": "struct", "name": "unnamed_struct_8"}}}},
        "unnamed_struct_8": {"kind": "struct", "size": 8, "fields": {
            "skc_daddr": {"offset": 0, "type": {"kind": "base", "name": "unsigned int"}},
            "skc_rcv_saddr": {"offset": 4, "type": {"kind": "base", "name": "unsigned int"}}}},
    }}
    layout = Layout(isf)
    assert layout.offset("sock_common", "skc_rcv_saddr") == 4
    assert layout.offset("sock_common", "skc_family") == 16
    assert layout.symbol("init_task") == 0xFFFFFFFF82A1AA40
    with pytest.raises(ScanError, match="no field skc_nothing"):
        layout.offset("sock_common", "skc_nothing")
