"""Rate limits per source, so a scanner cannot flood the spool through a decoy."""

from __future__ import annotations

import threading
import time
from enum import Enum


class Verdict(Enum):
    """What to do with one more event from a source."""

    SEND = "send"
    LAST = "last"  # send it, saying that what follows is suppressed for a while
    DROP = "drop"


class RateLimiter:
    """At most ``limit`` events per key in each ``window`` seconds; the last one says so.

    The first event of the next window carries how many were suppressed (:meth:`check`'s second
    value). At most ``max_keys`` keys are remembered: a flood of sources forgets the oldest.
    """

    def __init__(self, limit: int = 20, window: float = 60.0, max_keys: int = 10_000) -> None:
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self._entries: dict[str, list[float]] = {}  # key -> [window start, count, dropped]
        self._lock = threading.Lock()

    def check(self, key: str) -> tuple[Verdict, int]:
        """The verdict for one more event of ``key``, and the count suppressed before it."""
        with self._lock:
            now = time.monotonic()
            entry = self._entries.get(key)
            if entry is None or now - entry[0] >= self.window:
                suppressed = int(entry[2]) if entry else 0
                if entry is None and len(self._entries) >= self.max_keys:
                    self._forget(now)
                self._entries[key] = [now, 1, 0]
                return (Verdict.LAST if self.limit <= 1 else Verdict.SEND), suppressed
            entry[1] += 1
            if entry[1] < self.limit:
                return Verdict.SEND, 0
            if entry[1] == self.limit:
                return Verdict.LAST, 0
            entry[2] += 1
            return Verdict.DROP, 0

    def _forget(self, now: float) -> None:
        expired = [k for k, e in self._entries.items() if now - e[0] >= self.window]
        for key in expired:
            del self._entries[key]
        if len(self._entries) >= self.max_keys:
            oldest = sorted(self._entries, key=lambda k: self._entries[k][0])
            for key in oldest[: len(oldest) // 2]:
                del self._entries[key]
