"""A Volatility 3 ISF (intermediate symbol format) from BTF types and kallsyms addresses.

What dwarf2json makes from a debug kernel, made from what every BTF-enabled kernel carries: the
types come from BTF, the symbol addresses from kallsyms, ``linux_banner``'s text from the
kernel image (Volatility matches it against memory to pick this ISF, then finds the KASLR shift
by its ``init_task`` scan). BTF keeps no types for most global variables, so the few symbols
Volatility's Linux plugins read as objects get their types from ``SYMBOL_TYPES``.
"""

from __future__ import annotations

import base64
import datetime
from typing import Any

import vigil
from vigil.vmi import btf as B

ISF_FORMAT = "6.2.0"
POINTER_SIZE = 8

#: global variables Volatility's Linux plugins turn into objects (``object_from_symbol``), with
#: the type each has in the kernel's sources
SYMBOL_TYPES: dict[str, dict[str, Any]] = {
    "init_task": {"kind": "struct", "name": "task_struct"},
    "modules": {"kind": "struct", "name": "list_head"},
    "init_pid_ns": {"kind": "struct", "name": "pid_namespace"},
    "init_net": {"kind": "struct", "name": "net"},
    "net_namespace_list": {"kind": "struct", "name": "list_head"},
    "init_mm": {"kind": "struct", "name": "mm_struct"},
    "init_files": {"kind": "struct", "name": "files_struct"},
    "mount_hashtable": {"kind": "pointer", "subtype": {"kind": "struct", "name": "hlist_head"}},
    "mnt_cache": {"kind": "pointer", "subtype": {"kind": "struct", "name": "kmem_cache"}},
    "prb": {"kind": "pointer", "subtype": {"kind": "struct", "name": "printk_ringbuffer"}},
    "tcp_hashinfo": {"kind": "struct", "name": "inet_hashinfo"},
    "mod_tree": {"kind": "struct", "name": "mod_tree_root"},
    "module_kset": {"kind": "pointer", "subtype": {"kind": "struct", "name": "kset"}},
    "keyring_name_hash": {"kind": "array", "count": 32,
                          "subtype": {"kind": "struct", "name": "list_head"}},
    "idt_table": {"kind": "array", "count": 256, "subtype": {"kind": "struct", "name": "gate_struct"}},
    "tty_drivers": {"kind": "struct", "name": "list_head"},
    "net_families": {"kind": "array", "count": 46,
                     "subtype": {"kind": "pointer",
                                 "subtype": {"kind": "struct", "name": "net_proto_family"}}},
    "iomem_resource": {"kind": "struct", "name": "resource"},
    "jiffies": {"kind": "base", "name": "long unsigned int"},
    "nr_threads": {"kind": "base", "name": "int"},
    "page_offset_base": {"kind": "base", "name": "long unsigned int"},
    "vmemmap_base": {"kind": "base", "name": "long unsigned int"},
    "mem_section": {"kind": "pointer",
                    "subtype": {"kind": "pointer", "subtype": {"kind": "struct", "name": "mem_section"}}},
    "boot_cpu_data": {"kind": "struct", "name": "cpuinfo_x86"},
    "vmap_area_list": {"kind": "struct", "name": "list_head"},
    "ftrace_ops_list": {"kind": "pointer", "subtype": {"kind": "struct", "name": "ftrace_ops"}},
    "tracepoint_module_list": {"kind": "struct", "name": "list_head"},
    "socket_file_ops": {"kind": "struct", "name": "file_operations"},
    "sockfs_dentry_operations": {"kind": "struct", "name": "dentry_operations"},
    "cap_last_cap": {"kind": "base", "name": "int"},
    "_text": {"kind": "base", "name": "char"},
    "_etext": {"kind": "base", "name": "char"},
    "stext": {"kind": "base", "name": "char"},
    "etext": {"kind": "base", "name": "char"},
    "ftrace_list_end": {"kind": "struct", "name": "ftrace_ops"},
    "ftrace_mod_maps": {"kind": "struct", "name": "list_head"},
    "bpf_kallsyms": {"kind": "struct", "name": "list_head"},
    "prog_idr": {"kind": "struct", "name": "idr"},
    "keyboard_notifier_list": {"kind": "struct", "name": "atomic_notifier_head"},
    "num_registered_fb": {"kind": "base", "name": "int"},
    "registered_fb": {"kind": "array", "count": 32,
                      "subtype": {"kind": "pointer", "subtype": {"kind": "struct",
                                                                  "name": "fb_info"}}},
    "taint_flags": {"kind": "array", "count": 19, "subtype": {"kind": "struct",
                                                               "name": "taint_flag"}},
    "module_addr_min": {"kind": "base", "name": "long unsigned int"},
    "module_addr_max": {"kind": "base", "name": "long unsigned int"},
}


class ISFBuilder:
    """Turns BTF types into ISF ``base_types``, ``user_types`` and ``enums``."""

    def __init__(self, types: B.BTF) -> None:
        self.btf = types
        self.base_types: dict[str, dict[str, Any]] = {
            "void": {"size": 0, "signed": False, "kind": "void", "endian": "little"},
            "pointer": {"size": POINTER_SIZE, "signed": False, "kind": "int", "endian": "little"},
        }
        self.user_types: dict[str, dict[str, Any]] = {}
        self.enums: dict[str, dict[str, Any]] = {}
        #: BTF id of each struct/union/enum name chosen (the first full definition wins)
        self._names: dict[int, str] = {}
        self._pending: list[B.BTFType] = []
        self._by_name = self._index_names()

    def _index_names(self) -> dict[tuple[str, str], int]:
        """Named structs, unions and enums; when BTF holds several of one name, the largest."""
        chosen: dict[tuple[str, str], int] = {}
        for t in self.btf.types:
            if t.kind in (B.STRUCT, B.UNION, B.ENUM, B.ENUM64) and t.name:
                key = (_kind_name(t.kind), t.name)
                old = chosen.get(key)
                if old is None or self.btf[old].size_or_type < t.size_or_type:
                    chosen[key] = t.id
        return chosen

    def build(self) -> None:
        """Every named struct, union and enum, and what they refer to."""
        for type_id in self._by_name.values():
            self._declare(self.btf[type_id])
        while self._pending:
            self._define(self._pending.pop())

    def _declare(self, t: B.BTFType) -> str:
        """The ISF name of a struct, union or enum, queued for definition on first sight."""
        if t.id in self._names:
            return self._names[t.id]
        if t.name and self._by_name.get((_kind_name(t.kind), t.name)) == t.id:
            name = t.name
        else:
            name = f"unnamed_{_kind_name(t.kind)}_{t.id}"
        self._names[t.id] = name
        self._pending.append(t)
        return name

    def _define(self, t: B.BTFType) -> None:
        name = self._names[t.id]
        if t.kind in (B.ENUM, B.ENUM64):
            size = t.size_or_type or 4
            base = self._int_base(size, t.enum_signed or any(v < 0 for v in t.enum_values.values()))
            self.enums[name] = {"size": size, "base": base, "constants": dict(t.enum_values)}
            return
        fields: dict[str, dict[str, Any]] = {}
        for member in t.members:
            byte_offset = member.bit_offset // 8
            descriptor: dict[str, Any]
            target = self.btf.resolve(member.type_id)
            if member.bitfield_size or (target.kind == B.INT and target.int_bits % 8) or \
                    member.bit_offset % 8:
                unit = max(self.btf.size_of(member.type_id), 1)
                byte_offset = (member.bit_offset // (unit * 8)) * unit
                length = member.bitfield_size or target.int_bits or unit * 8
                descriptor = {"kind": "bitfield", "bit_position": member.bit_offset - byte_offset * 8,
                              "bit_length": length, "type": self.describe(member.type_id)}
                if descriptor["type"]["kind"] not in ("base", "enum"):
                    descriptor["type"] = {"kind": "base", "name": self._int_base(unit, False)}
            else:
                descriptor = self.describe(member.type_id)
            field: dict[str, Any] = {"type": descriptor, "offset": byte_offset}
            label = member.name
            if not label:  # an anonymous struct or union: its members are reached through it
                label = f"unnamed_field_{byte_offset:x}_{len(fields)}"
                field["anonymous"] = True
            fields[label] = field
        self.user_types[name] = {"kind": _kind_name(t.kind), "size": t.size_or_type,
                                 "fields": fields}

    def describe(self, type_id: int) -> dict[str, Any]:
        """The ISF type descriptor of a BTF type."""
        t = self.btf.resolve(type_id)
        if t.kind == 0:
            return {"kind": "base", "name": "void"}
        if t.kind == B.INT:
            return {"kind": "base", "name": self._base(t)}
        if t.kind == B.FLOAT:
            self.base_types.setdefault(t.name, {"size": t.size_or_type, "signed": True,
                                                "kind": "float", "endian": "little"})
            return {"kind": "base", "name": t.name}
        if t.kind == B.PTR:
            return {"kind": "pointer", "subtype": self.describe(t.size_or_type)}
        if t.kind == B.ARRAY:
            return {"kind": "array", "count": t.array_count, "subtype": self.describe(t.array_type)}
        if t.kind in (B.STRUCT, B.UNION, B.ENUM, B.ENUM64):
            if t.name and (full := self._by_name.get((_kind_name(t.kind), t.name))) is not None:
                t = self.btf[full]
            return {"kind": _kind_name(t.kind), "name": self._declare(t)}
        if t.kind == B.FWD:
            kind = "union" if t.fwd_union else "struct"
            full = self._by_name.get((kind, t.name))
            if full is not None:
                return {"kind": kind, "name": self._declare(self.btf[full])}
            self.user_types.setdefault(t.name, {"kind": kind, "size": 0, "fields": {}})
            return {"kind": kind, "name": t.name}
        if t.kind in (B.FUNC, B.FUNC_PROTO):
            return {"kind": "function"}
        return {"kind": "base", "name": "void"}

    def _base(self, t: B.BTFType) -> str:
        if t.int_encoding & B.INT_BOOL:
            kind = "bool"
        elif t.int_encoding & B.INT_CHAR or t.name in ("char", "signed char", "unsigned char"):
            kind = "char"
        else:
            kind = "int"
        self.base_types.setdefault(t.name, {"size": t.size_or_type,
                                            "signed": bool(t.int_encoding & B.INT_SIGNED),
                                            "kind": kind, "endian": "little"})
        return t.name

    def _int_base(self, size: int, signed: bool) -> str:
        names = {(1, False): "unsigned char", (1, True): "signed char",
                 (2, False): "short unsigned int", (2, True): "short int",
                 (4, False): "unsigned int", (4, True): "int",
                 (8, False): "long unsigned int", (8, True): "long int"}
        name = names.get((size, signed), "unsigned int")
        self.base_types.setdefault(name, {"size": size, "signed": signed,
                                          "kind": "char" if size == 1 else "int",
                                          "endian": "little"})
        return name


def _kind_name(kind: int) -> str:
    return {B.STRUCT: "struct", B.UNION: "union", B.ENUM: "enum", B.ENUM64: "enum"}[kind]


def build_isf(types: B.BTF, symbols: dict[str, int], banner: bytes, *,
              sources: dict[str, str] | None = None) -> dict[str, Any]:
    """The ISF of a kernel: its BTF ``types``, its kallsyms ``symbols`` (name to address, as
    linked: Volatility finds the KASLR shift) and its ``linux_banner`` text."""
    builder = ISFBuilder(types)
    builder.build()
    isf_symbols: dict[str, dict[str, Any]] = {}
    for name, address in symbols.items():
        entry: dict[str, Any] = {"address": address}
        wanted = SYMBOL_TYPES.get(name)
        if wanted is not None and _known(builder, wanted):
            entry["type"] = wanted
        isf_symbols[name] = entry
    if "linux_banner" in isf_symbols:
        text = banner.split(b"\0", 1)[0] + b"\0"
        isf_symbols["linux_banner"]["constant_data"] = base64.b64encode(text).decode()
        isf_symbols["linux_banner"]["type"] = {"kind": "array", "count": len(text),
                                               "subtype": {"kind": "base", "name": "char"}}
        builder.base_types.setdefault("char", {"size": 1, "signed": True, "kind": "char",
                                               "endian": "little"})
    metadata: dict[str, Any] = {
        "format": ISF_FORMAT,
        "producer": {"name": "vigil vmi symbols (BTF + kallsyms)", "version": vigil.__version__,
                     "datetime": datetime.datetime.now(datetime.UTC).isoformat()},
        "linux": {"symbols": [{"kind": "system-map", "name": name, "hash_type": "sha256",
                               "hash_value": digest}
                              for name, digest in (sources or {}).items()]},
    }
    return {"metadata": metadata, "base_types": builder.base_types,
            "user_types": builder.user_types, "enums": builder.enums, "symbols": isf_symbols}


def _known(builder: ISFBuilder, descriptor: dict[str, Any]) -> bool:
    """Whether every type a descriptor names is in the ISF."""
    kind = descriptor["kind"]
    if kind in ("struct", "union"):
        return descriptor["name"] in builder.user_types
    if kind == "base":
        return descriptor["name"] in builder.base_types
    if kind in ("pointer", "array"):
        return _known(builder, descriptor["subtype"])
    return True
