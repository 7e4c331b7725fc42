"""Kernel notifications: the proc connector, inotify, and the schedule they feed."""

from __future__ import annotations

import subprocess
import threading
import time

import pytest

from vigil.sensor.guest import schedule as schedule_module
from vigil.sensor.guest.schedule import Schedule
from vigil.sensor.guest.watch import inotify
from vigil.sensor.guest.watch.proc_connector import ProcConnector
from vigil.sensor.guest.watch.triggers import Triggers, plan_watches


class Wakes:
    """Records the collectors a Triggers instance wakes."""

    def __init__(self) -> None:
        self.woken: list[tuple[float, str]] = []
        self.cond = threading.Condition()

    def __call__(self, names, delay: float) -> None:
        with self.cond:
            self.woken.extend((time.monotonic(), name) for name in names)
            self.cond.notify_all()

    def wait_for(self, name: str, after: float, timeout: float = 2.0) -> float | None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for at, woken in self.woken:
                    if woken == name and at >= after:
                        return at - after
                if time.monotonic() >= deadline:
                    return None
                self.cond.wait(deadline - time.monotonic())


def test_proc_connector_reports_exec_and_exit():
    try:
        connector = ProcConnector.open()
    except OSError as exc:
        pytest.skip(f"no proc connector here: {exc}")
    try:
        child = subprocess.Popen(["sleep", "0.1"])
        child.wait()
        seen: set[tuple[str, int]] = set()
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline and ("exit", child.pid) not in seen:
            seen.update(connector.read())
            time.sleep(0.02)
        assert ("exec", child.pid) in seen and ("exit", child.pid) in seen
    finally:
        connector.close()


def test_watch_plan_covers_files_directories_and_missing_paths(tmp_path):
    log = tmp_path / "auth.log"
    log.touch()
    cron = tmp_path / "cron.d"
    (cron / "sub").mkdir(parents=True)
    missing = tmp_path / "home" / ".ssh" / "authorized_keys"
    plan = plan_watches({"authlog": [str(log)], "persistence": [str(cron), str(missing)]})
    by_path = {w.path: w for w in plan.values()}
    assert by_path[str(log)].mask & inotify.IN_MODIFY
    assert by_path[str(cron / "sub")].mask & inotify.IN_CREATE
    # tmp_path: the parent of auth.log and cron.d, and the nearest existing ancestor of .ssh
    names = {n for i in by_path[str(tmp_path)].interests for n in (i.names or ())}
    assert names == {"auth.log", "cron.d", "home"}


def test_file_changes_wake_the_collector_that_watches_them(tmp_path):
    log = tmp_path / "auth.log"
    log.touch()
    home = tmp_path / "home"
    paths = {"authlog": [str(log)], "persistence": [str(home / ".ssh" / "authorized_keys")]}
    wakes = Wakes()
    triggers = Triggers(wakes, process_collectors=[], watched_paths=lambda: paths)
    if triggers.inotify is None:
        triggers.stop()
        pytest.skip("no inotify here")
    triggers.start()
    try:
        started = time.monotonic()
        with open(log, "a") as handle:
            handle.write("a line\n")
        assert wakes.wait_for("authlog", started) is not None
        (tmp_path / "unrelated").write_text("x")  # a sibling: wakes nobody
        time.sleep(0.2)
        assert [name for _, name in wakes.woken].count("persistence") == 0
        started = time.monotonic()
        (home / ".ssh").mkdir(parents=True)  # the watches follow the path as it appears
        assert wakes.wait_for("persistence", started) is not None
        time.sleep(1.0)  # the refresh after a structural change adds .ssh
        started = time.monotonic()
        (home / ".ssh" / "authorized_keys").write_text("ssh-ed25519 AAAA attacker\n")
        assert wakes.wait_for("persistence", started) is not None
    finally:
        triggers.stop()


def test_process_events_wake_the_process_collectors_once_per_burst():
    wakes = Wakes()
    triggers = Triggers(wakes, process_collectors=["processes"], watched_paths=dict, use_inotify=False)
    if triggers.proc is None:
        triggers.stop()
        pytest.skip(f"no proc connector here: {triggers.status}")
    triggers.start()
    try:
        time.sleep(0.3)
        wakes.woken.clear()
        started = time.monotonic()
        for _ in range(20):
            subprocess.run(["true"], check=True)
        assert wakes.wait_for("processes", started) is not None
        time.sleep(0.5)
        assert len(wakes.woken) <= 5  # muted while a burst goes on, drained afterwards
    finally:
        triggers.stop()


def test_schedule_runs_woken_collectors_early_within_a_cpu_budget(monkeypatch):
    monkeypatch.setattr(schedule_module, "MIN_GAP", 0.2)
    schedule = Schedule({"processes": 5.0, "authlog": 2.0}, order=["authlog", "processes"])
    assert schedule.next() == ("authlog", False)  # everything is due at start
    now = time.monotonic()
    schedule.done("authlog", now, now, cost=0.0, early=False)
    assert schedule.next() == ("processes", False)
    now = time.monotonic()
    schedule.done("processes", now, now, cost=0.0, early=False)
    schedule.wake(["processes", "authlog", "unknown"], 0.0)
    started = time.monotonic()
    assert schedule.next() == ("authlog", True)
    assert time.monotonic() - started < 0.3  # MIN_GAP after its last run, no more
    ran = time.monotonic()
    schedule.done("authlog", ran, ran, cost=0.001, early=True)
    assert schedule.next() == ("processes", True)  # the bucket still holds enough
    end = time.monotonic()
    schedule.done("processes", end, end, cost=schedule_module.BURST + 0.005, early=True)
    schedule.wake(["processes"], 0.0)
    assert schedule.next() == ("processes", True)
    waited = time.monotonic() - end
    assert waited >= 0.005 / schedule_module.BUDGET * 0.9  # until the bucket refilled
    threading.Timer(0.1, schedule.close).start()
    end = time.monotonic()
    schedule.done("processes", end, end, cost=0.0, early=True)
    assert schedule.next() is None
