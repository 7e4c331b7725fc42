"""The guest sensor's collectors; importing this package registers every one of them."""

from __future__ import annotations

from . import (  # noqa: F401 - imported for their registration
    authlog,
    connections,
    listening,
    logintegrity,
    packages,
    persistence,
    processes,
    resources,
    services,
    users,
)
from .base import DEFAULT_INTERVALS, Collector, CollectorContext, create_collectors

__all__ = ["DEFAULT_INTERVALS", "Collector", "CollectorContext", "create_collectors"]
