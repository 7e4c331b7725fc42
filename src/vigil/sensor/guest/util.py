"""Small helpers shared by the guest sensor: UTC times, bounded strings, sha256 of files."""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime

#: Bound of any string field on the wire (vigil.protocol.MAX_MESSAGE_CHARS).
TEXT_MAX = 8192
SHORT_MAX = 255


def utc_now() -> str:
    """The current time as an RFC 3339 UTC string."""
    return datetime.now(UTC).isoformat()


def iso_from_epoch(seconds: float) -> str:
    """An epoch timestamp as an RFC 3339 UTC string."""
    return datetime.fromtimestamp(seconds, UTC).isoformat()


def clip(value: str | None, limit: int = TEXT_MAX) -> str | None:
    """``value`` cut to ``limit`` characters (None stays None)."""
    if value is None:
        return None
    return value if len(value) <= limit else value[:limit]


def sha256_file(path: str | os.PathLike[str], max_bytes: int | None = None) -> str | None:
    """The hex sha256 of a file's content, or None when it is larger than ``max_bytes``.

    Raises OSError when the file cannot be read.
    """
    digest = hashlib.sha256()
    total = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(1024 * 1024):
            total += len(chunk)
            if max_bytes is not None and total > max_bytes:
                return None
            digest.update(chunk)
    return digest.hexdigest()


def permission_hint() -> str:
    """What to do about a permission error reading another process's /proc entries."""
    if os.geteuid() != 0:
        return "permission denied: run the sensor as root to see everything"
    return "permission denied even as root (a non-dumpable process, or no CAP_SYS_PTRACE)"
