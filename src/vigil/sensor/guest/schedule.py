"""When each collector runs: on its interval, or earlier when something woke it.

The collector loop asks :meth:`Schedule.next` for the next collector to run; watchers call
:meth:`Schedule.wake` from their own threads. Each collector's early (woken) runs draw on a CPU
budget of its own, a token bucket refilled at :data:`BUDGET` of one core and holding
:data:`BURST` seconds: on a quiet machine an intrusion's first exec is looked at at once, while
a machine that execs a thousand processes a second costs the sensor at most that share of a
core per collector on top of its polling (the scheduled runs, which go on as a safety net, are
not charged), and a storm of process events never delays the cheap log collectors. A collector
also never runs early twice within :data:`MIN_GAP` seconds.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterable

MIN_GAP = 0.2
#: 4 % of a core per collector for early runs: a process scan costs 5-20 ms, so an attack's
#: burst of execs (a login, a shell, a payload) is looked at within ~0.2 s each time, while a
#: machine exec'ing without pause costs the sensor a bounded share (measured in benchmarks/).
BUDGET = 0.04
BURST = 0.2
#: The deepest debt one expensive early run can leave (a few seconds of refill at most).
MAX_DEBT = 0.2


class Schedule:
    """Due times of named collectors; thread-safe."""

    def __init__(self, intervals: dict[str, float], order: list[str] | None = None) -> None:
        self.intervals = dict(intervals)
        self._order = {name: i for i, name in enumerate(order or list(intervals))}
        self._due = dict.fromkeys(intervals, 0.0)
        self._woken: dict[str, float] = {}
        self._last_end: dict[str, float] = {}
        self._tokens = dict.fromkeys(intervals, BURST)
        self._tokens_at = dict.fromkeys(intervals, time.monotonic())
        self._cond = threading.Condition()
        self._closed = False

    def wake(self, names: Iterable[str], delay: float = 0.0) -> None:
        """Run ``names`` in ``delay`` seconds (or as soon as the budget allows)."""
        with self._cond:
            now = time.monotonic()
            for name in names:
                if name not in self._due:
                    continue
                at = max(now + delay, self._last_end.get(name, -math.inf) + MIN_GAP)
                if at < self._woken.get(name, math.inf):
                    self._woken[name] = at
            self._cond.notify()

    def close(self) -> None:
        """Make :meth:`next` return None."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def next(self) -> tuple[str, bool] | None:
        """Block until a collector is due; returns its name and whether it was woken early."""
        with self._cond:
            while not self._closed:
                now = time.monotonic()
                scheduled = [name for name, due in self._due.items() if due <= now]
                if scheduled:
                    name = min(scheduled, key=lambda n: (n not in self._woken, self._order.get(n, 0)))
                    return name, False
                woken = [
                    name for name, at in self._woken.items() if at <= now and self._refill(name, now) > 0
                ]
                if woken:
                    return min(woken, key=lambda n: self._order.get(n, 0)), True
                waits = [*self._due.values()]
                for name, at in self._woken.items():  # when it is due and its bucket refilled
                    waits.append(max(at, now - self._refill(name, now) / BUDGET))
                self._cond.wait(max(0.001, min(waits) - now))
            return None

    def done(self, name: str, started: float, finished: float, *, cost: float, early: bool) -> None:
        """Record a run (``cost``: its CPU seconds); wakes from before it started are spent."""
        with self._cond:
            self._last_end[name] = finished
            self._due[name] = finished + self.intervals[name]
            if early:
                self._tokens[name] = max(-MAX_DEBT, self._refill(name, finished) - cost)
            woken = self._woken.get(name)
            if woken is not None and woken <= started:
                del self._woken[name]

    def _refill(self, name: str, now: float) -> float:
        """The tokens of ``name``'s bucket now."""
        tokens = min(BURST, self._tokens[name] + (now - self._tokens_at[name]) * BUDGET)
        self._tokens[name], self._tokens_at[name] = tokens, now
        return tokens
