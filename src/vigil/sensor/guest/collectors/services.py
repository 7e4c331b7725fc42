"""Services: the systemd units of type service, as ``systemctl list-units`` shows them."""

from __future__ import annotations

import subprocess
from typing import Any

from ..util import SHORT_MAX, TEXT_MAX, clip
from .base import Collector

SYSTEMCTL = [
    "systemctl",
    "list-units",
    "--type=service",
    "--all",
    "--no-legend",
    "--plain",
    "--no-pager",
]


def parse_list_units(text: str) -> list[dict[str, Any]]:
    """Items from the output of ``systemctl list-units --no-legend --plain``."""
    items = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith(("●", "*")):  # marks a unit that is not found or failed
            line = line[1:].lstrip()
        fields = line.split(None, 4)
        if len(fields) < 4 or not fields[0].endswith(".service"):
            continue
        name, load, active, sub = fields[:4]
        items.append(
            {
                "key": clip(name, SHORT_MAX),
                "name": clip(name, SHORT_MAX),
                "load_state": load[:32],
                "active_state": active[:32],
                "sub_state": sub[:32],
                "description": clip(fields[4] if len(fields) > 4 else "", TEXT_MAX),
            }
        )
    return items


class ServicesCollector(Collector):
    """systemd services; unavailable (reported once) where systemd is not running."""

    name = "services"
    produces = "snapshot"
    interval_group = "inventory"

    def collect(self) -> list[dict[str, Any]] | None:
        """The services, or None when systemctl is missing or fails (e.g. in a container)."""
        try:
            result = subprocess.run(SYSTEMCTL, capture_output=True, text=True, timeout=60, check=False)
        except FileNotFoundError:
            self.report("systemd services", "systemctl is not installed", unreadable=False)
            return None
        except (OSError, subprocess.TimeoutExpired) as exc:
            self.report("systemd services", f"systemctl failed: {exc}")
            return None
        if result.returncode != 0:
            reason = (result.stderr.strip().splitlines() or ["no output"])[0]
            self.report(
                "systemd services",
                f"systemctl exited with status {result.returncode}: {reason}",
                unreadable=False,
            )
            return None
        return parse_list_units(result.stdout)
