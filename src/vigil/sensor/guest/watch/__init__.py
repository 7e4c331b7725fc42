"""Kernel notifications that wake collectors early: process events and file changes.

:mod:`.proc_connector` listens to the kernel's process events (exec, uid change, exit) and
:mod:`.inotify` to file changes; :mod:`.triggers` turns both into "collect this now" requests.
Each falls back to nothing — the scheduled polling — when the kernel or the privileges refuse.
"""

from __future__ import annotations
