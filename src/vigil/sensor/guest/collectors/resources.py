"""Resource usage for heartbeats: the machine's and the sensor's own."""

from __future__ import annotations

import os
from typing import Any

import psutil

from .base import Collector, CollectorContext


class ResourcesCollector(Collector):
    """CPU, memory, disk and network totals (see ``vigil.protocol.models.ResourceUsage``)."""

    name = "resources"
    produces = "resources"
    interval_group = "heartbeat"

    def __init__(self, context: CollectorContext) -> None:
        super().__init__(context)
        self._self = psutil.Process()
        psutil.cpu_percent(interval=None)  # the first call only starts the measurement
        self._self.cpu_percent(interval=None)

    def collect(self) -> dict[str, Any]:
        """Usage since the previous call (CPU) and current totals (everything else)."""
        memory = psutil.virtual_memory()
        usage: dict[str, Any] = {
            "cpu_percent": min(100.0, max(0.0, psutil.cpu_percent(interval=None))),
            "cpu_count": max(1, min(4096, psutil.cpu_count() or 1)),
            "load1": max(0.0, os.getloadavg()[0]),
            "mem_total": memory.total,
            "mem_used": max(0, memory.total - memory.available),
        }
        try:
            disk = psutil.disk_usage("/")
            usage["disk_total"], usage["disk_used"] = disk.total, disk.used
        except OSError:
            pass
        net = psutil.net_io_counters()
        if net is not None:
            usage["net_rx_bytes"], usage["net_tx_bytes"] = net.bytes_recv, net.bytes_sent
        try:
            with self._self.oneshot():
                usage["sensor_cpu_percent"] = max(0.0, self._self.cpu_percent(interval=None))
                usage["sensor_rss"] = self._self.memory_info().rss
        except psutil.Error:
            pass
        return usage
