"""Volatility 3 as a library: one long-lived context per memory source, plugins run on it.

The first plugin pays for Volatility's automagic (finding the banner, the ISF, the KASLR shift
and the page tables); its kernel module is then handed to every later plugin, which starts at
once. Plugin versions are pinned in ``PLUGINS``: a Volatility upgrade that changes one fails
loudly instead of silently changing what Vigil reports.
"""

from __future__ import annotations

import datetime
import logging
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from vigil.errors import VigilError

log = logging.getLogger(__name__)

#: the plugins Vigil runs, with the versions it was written and tested against
PLUGINS: dict[str, tuple[int, int, int]] = {
    "linux.pslist.PsList": (4, 1, 1),
    "linux.pidhashtable.PIDHashTable": (1, 0, 3),
    "linux.sockstat.Sockstat": (3, 0, 4),
    "linux.lsmod.Lsmod": (3, 0, 3),
    "linux.malware.check_modules.Check_modules": (3, 0, 1),
    "linux.malware.check_syscall.Check_syscall": (1, 0, 0),
    "linux.malware.check_idt.Check_idt": (2, 0, 0),
    "linux.malware.check_creds.Check_creds": (2, 0, 2),
    "linux.bash.Bash": (1, 0, 2),
}

_framework_lock = threading.Lock()
_framework_ready = False


class VolatilityError(VigilError):
    """Volatility could not analyse this memory, and why."""


def _framework(symbol_dirs: Iterable[Path]) -> Any:
    """Import Volatility's plugins once, with our symbol directories first on its path."""
    global _framework_ready
    import volatility3.symbols
    from volatility3 import framework, plugins

    with _framework_lock:
        for directory in symbol_dirs:
            path = str(directory)
            if path not in volatility3.symbols.__path__:
                volatility3.symbols.__path__.insert(0, path)
        if not _framework_ready:
            framework.require_interface_version(2, 0, 0)
            framework.import_files(plugins, True)
            logging.getLogger("volatility3").setLevel(logging.ERROR)
            _framework_ready = True
    return framework


def plugin_versions() -> dict[str, str]:
    """The installed version of every plugin Vigil runs."""
    framework = _framework(())
    found = framework.list_plugins()
    return {name: ".".join(map(str, found[name].version)) for name in PLUGINS if name in found}


def check_plugin_versions() -> None:
    """Refuse to run with plugins of another major version than the pinned ones."""
    framework = _framework(())
    found = framework.list_plugins()
    wrong = []
    for name, (major, minor, _patch) in PLUGINS.items():
        plugin = found.get(name)
        if plugin is None:
            wrong.append(f"{name} missing")
        elif plugin.version[0] != major or plugin.version[1] < minor:
            wrong.append(f"{name} {'.'.join(map(str, plugin.version))} (pinned {major}.{minor})")
    if wrong:
        raise VolatilityError("Volatility's plugins are not the pinned versions: "
                              + ", ".join(wrong))


def _plain(value: Any) -> Any:
    """A TreeGrid cell as JSON-friendly data."""
    from volatility3.framework import interfaces, renderers

    if isinstance(value, interfaces.renderers.BaseAbsentValue):
        return None
    if isinstance(value, renderers.format_hints.MultiTypeData):
        return bytes(value).decode("utf-8", "replace") if value.converted_int is False \
            else int.from_bytes(bytes(value), "little")
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


class Analysis:
    """Volatility plugins over one memory source, sharing one context."""

    def __init__(self, location: str, symbol_dirs: Iterable[Path] = ()) -> None:
        """``location``: a file:// URL of a memory image (raw, ELF core, LiME...)."""
        self.location = location
        self.symbol_dirs = list(symbol_dirs)
        framework = _framework(self.symbol_dirs)
        from volatility3.framework import contexts

        self.plugins = framework.list_plugins()
        self.context = contexts.Context()
        self.context.config["automagic.LayerStacker.single_location"] = location
        #: the name of the kernel module in the context, once automagic has found it
        self._kernel: str | None = None
        self._lock = threading.Lock()

    def run(self, plugin_name: str, **options: Any) -> list[dict[str, Any]]:
        """Run one plugin; its rows as dicts of column name to plain value."""
        from volatility3.framework import automagic, exceptions, interfaces, plugins
        from volatility3.framework.automagic import stacker

        plugin = self.plugins.get(plugin_name)
        if plugin is None:
            raise VolatilityError(f"Volatility has no plugin {plugin_name}")
        with self._lock:
            path = interfaces.configuration.path_join("plugins", plugin.__name__)
            for key, value in options.items():
                self.context.config[interfaces.configuration.path_join(path, key)] = value
            if self._kernel is None:
                chosen = automagic.choose_automagic(automagic.available(self.context), plugin)
                self.context.config["automagic.LayerStacker.stackers"] = \
                    stacker.choose_os_stackers(plugin)
            else:  # the kernel module the first plugin found: no automagic again
                chosen = []
                self.context.config[interfaces.configuration.path_join(path, "kernel")] = \
                    self._kernel
            try:
                constructed = plugins.construct_plugin(self.context, chosen, plugin, "plugins",
                                                       None, None)
            except exceptions.UnsatisfiedException as exc:
                raise VolatilityError(
                    f"{plugin_name} cannot run on {self.location}: "
                    f"{', '.join(exc.unsatisfied)} (no matching symbols for this kernel? "
                    "see `vigil vmi symbols`)") from exc
            if self._kernel is None:
                self._kernel = str(constructed.config["kernel"])
            grid = constructed.run()
            columns = [c.name for c in grid.columns]
            rows: list[dict[str, Any]] = []

            def visit(node: Any, accumulator: list[dict[str, Any]]) -> list[dict[str, Any]]:
                accumulator.append({c: _plain(v) for c, v in zip(columns, node.values,
                                                                  strict=True)})
                return accumulator

            grid.populate(visit, rows)
            return rows

    def kernel_range(self) -> tuple[int, int]:
        """Where the running kernel's image lies (``_stext`` to ``_end``, KASLR applied), as
        Volatility's plugins print addresses (masked to the layer's address width)."""
        if self._kernel is None:
            raise VolatilityError("no plugin has run yet: the kernel is not located")
        module = self.context.modules[self._kernel]
        mask = (1 << self.context.layers[module.layer_name].address_mask.bit_length()) - 1
        start = module.get_symbol("_stext").address + module.offset
        end = module.get_symbol("_end").address + module.offset
        return start & mask, end & mask

    def kernel_location(self) -> tuple[int, int, str]:
        """The page-table base, the virtual KASLR shift and the ISF of the kernel the first
        plugin found: what the fast path needs (``fastscan.KernelLocation``)."""
        if self._kernel is None:
            raise VolatilityError("no plugin has run yet: the kernel is not located")
        module = self.context.modules[self._kernel]
        layer = self.context.layers[module.layer_name]
        table = self.context.symbol_space[module.symbol_table_name]
        return int(layer.config["page_map_offset"]), int(module.offset), \
            str(table.config["isf_url"])

    def kernel_object(self, type_name: str, offset: int) -> Any:
        """A kernel structure at a virtual address, read through the located kernel."""
        if self._kernel is None:
            raise VolatilityError("no plugin has run yet: the kernel is not located")
        return self.context.modules[self._kernel].object(type_name, offset=offset, absolute=True)
