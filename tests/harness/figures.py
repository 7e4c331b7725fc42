"""Figures measured by tests (latencies, outage delivery), printed at the end of the run."""

from __future__ import annotations

FIGURES: list[str] = []


def report(line: str) -> None:
    """Keep a measured figure for the summary at the end of the test run."""
    FIGURES.append(line)
    print(line)
