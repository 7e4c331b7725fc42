"""Rule sensor-silence (the watchdog's); its real-process test is in tests/e2e."""

from __future__ import annotations

from tests.server.detect.helpers import T0, MemoryContext, run, seconds

from vigil.server.detect.base import Facts
from vigil.server.detect.rules.sensor_silence import SensorSilenceRule


def test_silence_names_the_sensor_and_how_long() -> None:
    sensor = {"id": "abc", "kind": "guest", "hostname": "web-1", "heartbeat_interval": 2.0,
              "last_seen_at": T0 - seconds(7), "deadline": T0 - seconds(1)}
    facts = Facts(vm_id=1, tenant_id=1, sensor_id="abc", silent_sensors=[sensor])
    rule = SensorSilenceRule()
    assert rule.wants(facts) and not rule.wants(Facts(vm_id=1, tenant_id=1, sensor_id="abc"))
    (found,) = run(rule, facts, MemoryContext())
    assert found.observed_at == T0 - seconds(1)
    assert found.evidence["silent_for"] == 7.0 and "web-1" in found.reason
