"""What the sensor tells the server about its machine when it enrolls."""

from __future__ import annotations

import os
import re
import socket
import uuid
from typing import Any

from .client import sensor_version
from .util import SHORT_MAX, clip


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read().strip()
    except OSError:
        return None


def machine_id(path: str = "/etc/machine-id") -> str | None:
    """systemd's machine id (32 hex digits), when present and well-formed."""
    value = _read(path)
    return value if value and re.fullmatch(r"[0-9a-fA-F-]{32,36}", value) else None


def smbios_uuid(path: str = "/sys/class/dmi/id/product_uuid") -> str | None:
    """The SMBIOS system UUID the hypervisor gave the VM (readable by root only)."""
    value = _read(path)
    if not value:
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


def os_name(path: str = "/etc/os-release") -> str | None:
    """PRETTY_NAME from os-release, e.g. "Debian GNU/Linux 12 (bookworm)"."""
    text = _read(path) or ""
    for line in text.splitlines():
        if line.startswith("PRETTY_NAME="):
            return clip(line.split("=", 1)[1].strip().strip("\"'"), SHORT_MAX)
    return None


def enroll_request(enroll_token: str) -> dict[str, Any]:
    """An EnrollRequest body for this machine."""
    return {
        "enroll_token": enroll_token,
        "kind": "guest",
        "hostname": clip(socket.gethostname(), SHORT_MAX) or "unknown",
        "machine_id": machine_id(),
        "smbios_uuid": smbios_uuid(),
        "os": os_name(),
        "kernel": clip(os.uname().release, SHORT_MAX),
        "sensor_version": sensor_version()[:64],
        "privileged": os.geteuid() == 0,
    }
