"""Installed software: dpkg, rpm and Python distributions (pip)."""

from __future__ import annotations

import glob
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

from ..util import SHORT_MAX, clip
from .base import Collector

RPM_QUERY = ["rpm", "-qa", "--qf", r"%{NAME}\t%{VERSION}-%{RELEASE}\t%{ARCH}\n"]
SYSTEM_PYTHON_PATHS = (
    "/usr/lib/python3/dist-packages",
    "/usr/local/lib/python3*/dist-packages",
    "/usr/local/lib/python3*/site-packages",
    "/usr/lib/python3*/site-packages",
    "/usr/lib64/python3*/site-packages",
)


def parse_dpkg_status(text: str) -> Iterator[tuple[str, str, str]]:
    """(name, version, arch) of each package dpkg's status file marks as installed."""
    for paragraph in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in paragraph.splitlines():
            if line[:1] in (" ", "\t") or ":" not in line:
                continue
            name, _, value = line.partition(":")
            if name in ("Package", "Status", "Version", "Architecture"):
                fields[name] = value.strip()
        status = fields.get("Status", "").split()
        if "Package" in fields and status[-1:] == ["installed"]:
            yield fields["Package"], fields.get("Version", ""), fields.get("Architecture", "")


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def python_paths() -> list[str]:
    """Directories holding Python distributions: the sensor's own sys.path and the system's."""
    found: list[str] = []
    seen: set[str] = set()
    candidates = [p for p in sys.path if p]
    for pattern in SYSTEM_PYTHON_PATHS:
        candidates.extend(sorted(glob.glob(pattern)))
    for path in candidates:
        real = os.path.realpath(path)
        if real not in seen and os.path.isdir(real):
            seen.add(real)
            found.append(real)
    return found


class PackagesCollector(Collector):
    """Installed packages (see ``vigil.protocol.models.PackageItem``)."""

    name = "packages"
    produces = "snapshot"
    interval_group = "inventory"

    def collect(self) -> list[dict[str, Any]]:
        """One item per package; keys are ``manager:name`` (plus arch/version when repeated)."""
        items: dict[str, dict[str, Any]] = {}
        for name, version, arch in self._dpkg():
            self._add(items, "dpkg", name, version, arch)
        for name, version, arch in self._rpm():
            self._add(items, "rpm", name, version, arch)
        for name, version in self._pip():
            self._add(items, "pip", name, version, "")
        return list(items.values())

    @staticmethod
    def _add(items: dict[str, dict[str, Any]], manager: str, name: str, version: str, arch: str):
        key = f"{manager}:{name}"
        if key in items:
            if items[key]["version"] == version and items[key]["arch"] == arch:
                return
            key = f"{manager}:{name}:{arch}:{version}"
        items[key] = {
            "key": key[:600],
            "manager": manager,
            "name": clip(name, SHORT_MAX),
            "version": clip(version, SHORT_MAX),
            "arch": arch[:32],
        }

    def _dpkg(self) -> Iterator[tuple[str, str, str]]:
        path = self.context.dpkg_status
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                text = handle.read()
        except FileNotFoundError:
            return
        except OSError as exc:
            self.report(path, str(exc))
            return
        yield from parse_dpkg_status(text)

    def _rpm(self) -> Iterator[tuple[str, str, str]]:
        if shutil.which("rpm") is None or not os.path.isdir("/var/lib/rpm"):
            return
        try:
            result = subprocess.run(RPM_QUERY, capture_output=True, text=True, timeout=120, check=True)
        except (OSError, subprocess.SubprocessError) as exc:
            self.report("rpm packages", f"rpm -qa failed: {exc}")
            return
        for line in result.stdout.splitlines():
            parts = line.split("\t")
            if len(parts) == 3:
                yield parts[0], parts[1], parts[2]

    def _pip(self) -> Iterator[tuple[str, str]]:
        seen: set[tuple[str, str]] = set()
        for dist in importlib.metadata.distributions(path=python_paths()):
            try:
                name = dist.metadata["Name"]
                version = dist.version or ""
            except (OSError, ValueError, KeyError):
                continue
            if not name or (_normalise(name), version) in seen:
                continue
            seen.add((_normalise(name), version))
            yield name, version
