"""The symbol cache: one ISF per kernel, derived once, found by banner and build id.

``~/.cache/vigil/symbols`` (``VIGIL_SYMBOLS``) holds ``linux/KEY.json.xz``, where KEY is the
kernel's GNU build id (or, for a kernel without one, a hash of its banner), and ``index.json``,
banner and build id to file. Volatility is pointed at the directory and matches a memory
image's banner against the ISFs in it by itself.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import os
import threading
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vigil.vmi.kernel import Kernel

_lock = threading.Lock()


def symbols_dir() -> Path:
    return Path(os.environ.get("VIGIL_SYMBOLS") or Path.home() / ".cache" / "vigil" / "symbols")


@dataclass(frozen=True)
class Symbols:
    path: Path
    banner: str
    build_id: str | None
    derived_in: float | None  # seconds, when derived now; None when found in the cache


def _index(directory: Path) -> dict[str, Any]:
    try:
        return dict(json.loads((directory / "index.json").read_text()))
    except (OSError, ValueError):
        return {}


def cached(banner: str, directory: Path | None = None) -> Path | None:
    """The cached ISF of the kernel with this banner, if any."""
    directory = directory or symbols_dir()
    entry = _index(directory).get("banners", {}).get(banner.rstrip("\n\0"))
    if entry and (directory / entry).exists():
        return directory / entry
    return None


def provision(kernel_path: Path, directory: Path | None = None, *,
              force: bool = False) -> Symbols:
    """The ISF of a kernel image: from the cache, or derived from its BTF and kallsyms."""
    directory = directory or symbols_dir()
    kernel = Kernel.load(kernel_path)
    banner = kernel.banner().decode("utf-8", "replace").rstrip("\n\0")
    bid = kernel.build_id()
    key = bid or hashlib.sha256(banner.encode()).hexdigest()[:40]
    target = directory / "linux" / f"{key}.json.xz"
    if target.exists() and not force:
        return Symbols(target, banner, bid, None)
    started = time.monotonic()
    isf = kernel.isf()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    with lzma.open(tmp, "wt", preset=1) as out:
        json.dump(isf, out, separators=(",", ":"))
    tmp.replace(target)
    with _lock:
        index = _index(directory)
        index.setdefault("banners", {})[banner] = str(target.relative_to(directory))
        if bid:
            index.setdefault("build_ids", {})[bid] = str(target.relative_to(directory))
        (directory / "index.json").write_text(json.dumps(index, indent=1))
    return Symbols(target, banner, bid, round(time.monotonic() - started, 2))


def load_isf(location: str | Path) -> dict[str, Any]:
    """An ISF by path or file:// URL (as Volatility reports it), xz-compressed or not."""
    path = Path(urllib.parse.urlsplit(str(location)).path) if "://" in str(location) \
        else Path(location)
    with (lzma.open(path, "rt") if path.name.endswith(".xz") else path.open()) as f:
        return dict(json.load(f))
