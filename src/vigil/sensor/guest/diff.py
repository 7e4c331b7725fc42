"""Change-driven snapshots: send only what was added, changed or removed since the last one.

A full snapshot of a kind is sent at start and every ``full_every`` seconds; in between, a
snapshot carries the added and changed items and the keys of the removed ones, and nothing at
all is sent when nothing changed. The last items of each kind are kept in memory, and copied
to the state directory (``snapshots/<kind>.json``, at most every :data:`SAVE_EVERY` seconds)
where an analyst can see what the sensor last reported.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from vigil.protocol import FULL_SNAPSHOT_EVERY, SNAPSHOT_KINDS

from .state import StateDir
from .util import utc_now

Item = dict[str, Any]
#: Seconds between copies of the last items to the state directory (full snapshots: always).
SAVE_EVERY = 30.0


class SnapshotDiffer:
    """Turns successive item lists of each snapshot kind into full or differential snapshots."""

    def __init__(
        self,
        state: StateDir | None = None,
        *,
        full_every: float = FULL_SNAPSHOT_EVERY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.state = state
        self.full_every = full_every
        self.clock = clock
        self._last: dict[str, dict[str, Item]] = {}
        self._last_full: dict[str, float] = {}
        self._saved_at: dict[str, float] = {}

    def force_full(self, kind: str | None = None) -> None:
        """Make the next snapshot of ``kind`` (of every kind when None) a full one."""
        for name in [kind] if kind else list(self._last_full):
            self._last_full.pop(name, None)

    def diff(self, kind: str, items: Iterable[Item]) -> dict[str, Any] | None:
        """The snapshot to send for ``items`` (a list of dicts with a unique ``key``), or None."""
        if kind not in SNAPSHOT_KINDS:
            raise ValueError(f"unknown snapshot kind {kind!r}")
        current = {item["key"]: item for item in items}
        now = self.clock()
        last_full = self._last_full.get(kind)
        if last_full is None or now - last_full >= self.full_every:
            snapshot = self._snapshot(kind, full=True, items=list(current.values()), removed=[])
            self._last_full[kind] = now
        else:
            previous = self._last.get(kind, {})
            changed = [item for key, item in current.items() if previous.get(key) != item]
            removed = [key for key in previous if key not in current]
            if not changed and not removed:
                return None
            snapshot = self._snapshot(kind, full=False, items=changed, removed=removed)
        self._last[kind] = current
        if self.state is not None and (
            snapshot["full"] or now - self._saved_at.get(kind, -SAVE_EVERY) >= SAVE_EVERY
        ):
            self.state.write_json(
                f"snapshots/{kind}.json", {"taken_at": snapshot["taken_at"], "items": current}
            )
            self._saved_at[kind] = now
        return snapshot

    @staticmethod
    def _snapshot(kind: str, *, full: bool, items: list[Item], removed: list[str]) -> dict[str, Any]:
        return {
            "id": str(uuid.uuid4()),
            "kind": kind,
            "taken_at": utc_now(),
            "full": full,
            "items": items,
            "removed": removed,
        }
