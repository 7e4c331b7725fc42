"""Building security events that match ``vigil.protocol.models.SecurityEvent``."""

from __future__ import annotations

import ipaddress
import uuid
from typing import Any

from vigil.protocol import EVENT_KINDS

from .util import SHORT_MAX, TEXT_MAX, clip, utc_now

_MAX_DATA_KEYS = 64
_MAX_LIST_ITEMS = 256
_SCALARS = (str, int, float, bool, type(None))


def valid_ip(value: str | None) -> str | None:
    """``value`` normalised as an IP address, or None when it is not one."""
    if not value:
        return None
    try:
        return str(ipaddress.ip_address(value.strip("[]")))
    except ValueError:
        return None


def _scalar(value: Any) -> Any:
    if isinstance(value, str):
        return clip(value, TEXT_MAX)
    if isinstance(value, _SCALARS):
        return value
    return clip(str(value), TEXT_MAX)


def _json_value(value: Any) -> Any:
    """``value`` reduced to what the wire accepts: a scalar, a list or a flat dict of scalars."""
    if isinstance(value, list | tuple | set):
        return [_scalar(item) for item in list(value)[:_MAX_LIST_ITEMS]]
    if isinstance(value, dict):
        return {str(k)[:64]: _scalar(v) for k, v in list(value.items())[:_MAX_DATA_KEYS]}
    return _scalar(value)


def make_event(
    kind: str,
    *,
    message: str = "",
    source: str = "",
    observed_at: str | None = None,
    src_ip: str | None = None,
    user: str | None = None,
    pid: int | None = None,
    path: str | None = None,
    data: dict[str, Any] | None = None,
    event_id: str | None = None,
) -> dict[str, Any]:
    """A security event as a JSON-ready dict, with its UUID given now and kept for good."""
    if kind not in EVENT_KINDS:
        raise ValueError(f"unknown event kind {kind!r}")
    clean = {str(key)[:64]: _json_value(value) for key, value in list((data or {}).items())[:_MAX_DATA_KEYS]}
    return {
        "id": event_id or str(uuid.uuid4()),
        "kind": kind,
        "observed_at": observed_at or utc_now(),
        "source": clip(source, 1024) or "",
        "message": clip(message, TEXT_MAX) or "",
        "src_ip": valid_ip(src_ip),
        "user": clip(user, SHORT_MAX) if user else None,
        "pid": pid if pid is not None and 0 <= pid <= 2**31 else None,
        "path": clip(path, TEXT_MAX),
        "data": clean,
    }
