"""Change-driven snapshots."""

from __future__ import annotations

import json

import pytest

from vigil.sensor.guest.diff import SAVE_EVERY, SnapshotDiffer
from vigil.sensor.guest.state import StateDir


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _items(**versions):
    return [{"key": key, "name": key, "version": value} for key, value in versions.items()]


def test_full_then_differences_then_nothing(tmp_path):
    clock = Clock()
    state = StateDir(tmp_path)
    state.ensure()
    differ = SnapshotDiffer(state, full_every=600, clock=clock)

    first = differ.diff("packages", _items(a="1", b="1", c="1"))
    assert first["full"] is True and len(first["items"]) == 3 and first["removed"] == []
    assert first["kind"] == "packages" and first["taken_at"].endswith("+00:00")

    clock.now += 5
    assert differ.diff("packages", _items(a="1", b="1", c="1")) is None

    clock.now += 5
    second = differ.diff("packages", _items(a="1", b="2", d="1"))
    assert second["full"] is False
    assert sorted(i["key"] for i in second["items"]) == ["b", "d"]
    assert second["removed"] == ["c"]
    assert second["id"] != first["id"]

    # the state dir copy follows at most every SAVE_EVERY seconds (always for a full snapshot)
    saved = json.loads((tmp_path / "snapshots/packages.json").read_text())
    assert sorted(saved["items"]) == ["a", "b", "c"]
    clock.now += SAVE_EVERY
    differ.diff("packages", _items(a="1", b="2", d="2"))
    saved = json.loads((tmp_path / "snapshots/packages.json").read_text())
    assert saved["items"]["d"]["version"] == "2"


def test_full_snapshot_cadence_and_forcing():
    clock = Clock()
    differ = SnapshotDiffer(None, full_every=600, clock=clock)
    assert differ.diff("users", _items(a="1"))["full"] is True
    clock.now += 599
    assert differ.diff("users", _items(a="1")) is None
    clock.now += 1
    again = differ.diff("users", _items(a="1"))
    assert again["full"] is True and len(again["items"]) == 1  # sent even though unchanged
    clock.now += 1
    differ.force_full("users")
    assert differ.diff("users", _items(a="1"))["full"] is True
    # kinds are independent
    assert differ.diff("processes", [])["full"] is True


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError):
        SnapshotDiffer().diff("kernels", [])
