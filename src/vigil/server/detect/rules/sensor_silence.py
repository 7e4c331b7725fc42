"""A guest sensor that stops reporting without saying goodbye was stopped or killed."""

from __future__ import annotations

from collections.abc import Iterator

from vigil.server.detect.base import Facts, Finding, Rule, RuleContext


class SensorSilenceRule(Rule):
    """No heartbeat from a sensor for three of its intervals, and no clean shutdown: it was
    killed (``kill -9``), stopped, or its VM cut off — attackers silence monitoring first. The
    watchdog checks every second, so this fires seconds after the third missed beat."""

    id = "sensor-silence"
    title = "Sensor stopped or killed"
    techniques = ("T1562.001",)
    tactic = "defense-evasion"
    severity = "high"
    controls = ("SI-4", "AU-5", "IR-4")
    evidence_fields = ("sensor_id", "hostname", "last_seen_at", "heartbeat_interval", "silent_for")
    inputs = ("watchdog",)

    def wants(self, facts: Facts) -> bool:
        return bool(facts.silent_sensors)

    def evaluate(self, facts: Facts, ctx: RuleContext) -> Iterator[Finding]:
        for sensor in facts.silent_sensors:
            last = sensor["last_seen_at"]
            silent = (ctx.now - last).total_seconds()
            yield Finding(
                subject=f"{sensor['id']}@{last.isoformat()}",
                observed_at=sensor["deadline"],
                reason=f"the {sensor['kind']} sensor on {sensor['hostname']} has sent no "
                f"heartbeat for {silent:.0f} s (interval {sensor['heartbeat_interval']:g} s) and "
                "did not shut down cleanly",
                evidence={"sensor_id": sensor["id"], "hostname": sensor["hostname"],
                          "last_seen_at": last.isoformat(),
                          "heartbeat_interval": sensor["heartbeat_interval"],
                          "silent_for": round(silent, 1)},
            )
