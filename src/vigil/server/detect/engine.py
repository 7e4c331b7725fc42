"""The detection engine: runs the rules on what each batch brought, raises alerts, folds them
into incidents and queues the notifications, all in the ingest transaction.

Ingest commits the events, the rule state, the alerts, the incidents and the notification
outbox together: when the sensor gets its acknowledgement, the alert is readable in the API.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from vigil.config import Settings
from vigil.errors import ConfigError
from vigil.server.db.models import VM, Alert, Event, InventoryItem, utcnow
from vigil.server.detect.base import Facts, Finding, Rule, all_rules
from vigil.server.detect.incidents import BatchCache, attach
from vigil.server.detect.state import Handle, StateStore
from vigil.server.services.audit import Actor, audit

log = logging.getLogger("vigil.detect")

SYSTEM = Actor("system", "detection")
#: called for each new alert and each new or escalated incident, inside the transaction
Notify = Callable[..., Any]


def load_hashes(path: Path | None) -> set[str]:
    """SHA-256s, one per line (``#`` starts a comment), from ``rat_hashes_file``."""
    if path is None:
        return set()
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read rat_hashes_file {path}: {exc}") from None
    hashes = set()
    for number, line in enumerate(text.splitlines(), 1):
        value = line.split("#", 1)[0].strip().lower()
        if not value:
            continue
        if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
            raise ConfigError(f"{path}:{number}: not a SHA-256: {value!r}")
        hashes.add(value)
    return hashes


class _Context:
    """A :class:`vigil.server.detect.base.RuleContext` over one transaction."""

    def __init__(self, session: Session, facts: Facts, store: StateStore, rat_hashes: set[str]):
        self.session = session
        self.facts = facts
        self.store = store
        self.now = utcnow()
        self._rat_hashes = rat_hashes
        self._inventory: dict[str, list[dict[str, Any]]] = {}
        self.scope = f"vm:{facts.vm_id}" if facts.vm_id is not None else f"sensor:{facts.sensor_id}"

    def _scope(self, shared: bool) -> str:
        return f"tenant:{self.facts.tenant_id}" if shared else self.scope

    def state(self, rule: Rule, key: str, *, shared: bool = False) -> Handle:
        return self.store.get(rule.state_namespace or rule.id, self._scope(shared), key)

    def preload(self, rule: Rule, keys: list[str], *, shared: bool = False) -> None:
        self.store.preload(rule.state_namespace or rule.id, self._scope(shared), keys)

    def _current(self, kind: str) -> list[dict[str, Any]]:
        if kind not in self._inventory:
            if self.facts.vm_id is None:
                self._inventory[kind] = []
            else:
                self._inventory[kind] = list(self.session.scalars(
                    select(InventoryItem.data).where(
                        InventoryItem.vm_id == self.facts.vm_id, InventoryItem.kind == kind,
                        InventoryItem.removed_at.is_(None))))
        return self._inventory[kind]

    def processes(self) -> dict[int, dict[str, Any]]:
        return {item["pid"]: item for item in self._current("processes")}

    def connections(self) -> list[dict[str, Any]]:
        return self._current("connections")

    def listening(self) -> list[dict[str, Any]]:
        return self._current("listening")

    def known_rat_hashes(self) -> set[str]:
        return self._rat_hashes


def _jsonable(value: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(value, default=str))


class DetectionEngine:
    """Every registered rule, ready to run on batches (one instance per server process)."""

    def __init__(self, settings: Settings, *, notify: Notify | None = None) -> None:
        self.rules = all_rules()
        self.window = timedelta(minutes=settings.incident_window_minutes)
        self.rat_hashes = load_hashes(settings.rat_hashes_file)
        self.notify = notify
        self.event_kinds = {name[6:] for rule in self.rules for name in rule.inputs
                            if name.startswith("event:")}
        self.inventory_kinds = {name for rule in self.rules for name in rule.inputs
                                if not name.startswith("event:") and name != "watchdog"}

    def wants_events(self, kinds: set[str]) -> bool:
        return bool(kinds & self.event_kinds)

    def run(self, session: Session, facts: Facts) -> list[Alert]:
        """Evaluate the rules on ``facts``; returns the alerts raised (new ones only)."""
        active = [rule for rule in self.rules if rule.wants(facts)]
        if not active:
            return []
        store = StateStore(session)
        ctx = _Context(session, facts, store, self.rat_hashes)
        findings: list[tuple[Rule, Finding]] = []
        for rule in active:
            try:
                findings.extend((rule, finding) for finding in rule.evaluate(facts, ctx))
            except Exception:  # one broken rule must not lose the batch or the other rules
                log.exception("rule %s failed on a batch of sensor %s", rule.id, facts.sensor_id)
        store.flush()
        if not findings:
            return []
        return self._raise(session, facts, ctx.scope, findings)

    def _raise(self, session: Session, facts: Facts, scope: str,
               findings: list[tuple[Rule, Finding]]) -> list[Alert]:
        postgres = session.get_bind().dialect.name == "postgresql"
        if postgres and facts.vm_id is not None:
            # one correlation at a time per VM, whichever server process holds the batch
            session.execute(select(VM.id).where(VM.id == facts.vm_id).with_for_update())
        insert = pg_insert if postgres else sqlite_insert
        alerts = []
        now = utcnow()
        cache = BatchCache()
        cited = self._cited_events(session, facts.tenant_id,
                                   [i for _, finding in findings for i in finding.event_ids])
        for rule, finding in sorted(findings, key=lambda rf: rf[1].observed_at):
            dedup = f"{rule.id}|{scope}|{finding.subject}"
            if len(dedup) > 500:
                dedup = f"{rule.id}|{scope}|sha256:{hashlib.sha256(dedup.encode()).hexdigest()}"
            evidence = finding.evidence
            if finding.event_ids:
                events = [cited[i] for i in dict.fromkeys(finding.event_ids) if i in cited]
                events.sort(key=lambda e: (e["observed_at"], e["seq"]))
                evidence = {**evidence, "events": events}
            values = dict(
                tenant_id=facts.tenant_id, vm_id=facts.vm_id, rule_id=rule.id,
                title=(finding.title or rule.title)[:255], severity=finding.severity or rule.severity,
                techniques=list(finding.techniques or rule.techniques), controls=list(rule.controls),
                tactic=rule.tactic, observed_at=finding.observed_at, detected_at=now,
                evidence=_jsonable(evidence), status="open", reason=finding.reason[:4000],
                src_ip=finding.src_ip, dedup_key=dedup,
            )
            stmt = insert(Alert).values(**values).on_conflict_do_nothing(
                index_elements=["dedup_key"]).returning(Alert.id)
            alert_id = session.execute(stmt).scalar_one_or_none()
            if alert_id is None:
                continue  # raised before: the same process, source or file seen again
            alert = session.get(Alert, alert_id)
            assert alert is not None
            incident, outcome = attach(session, alert, window=self.window, cache=cache)
            if outcome == "created":
                audit(session, actor=SYSTEM, action="incident.open", target_type="incident",
                      target_id=incident.id, tenant_id=facts.tenant_id,
                      detail={"alert": alert.id, "rule": rule.id, "severity": alert.severity})
            alerts.append(alert)
            if self.notify is not None:
                self.notify(session, alert=alert, incident=incident, incident_outcome=outcome)
        return alerts


    @staticmethod
    def _cited_events(session: Session, tenant_id: int, ids: list[str]) -> dict[str, dict[str, Any]]:
        """The events the findings cite, summarised for their evidence, by id (one query per
        500 ids for a whole burst of alerts)."""
        wanted = list(dict.fromkeys(ids))
        out: dict[str, dict[str, Any]] = {}
        for i in range(0, len(wanted), 500):
            for r in session.execute(
                select(Event.uuid, Event.kind, Event.observed_at, Event.src_ip, Event.username,
                       Event.message, Event.seq)
                .where(Event.uuid.in_(wanted[i:i + 500]), Event.tenant_id == tenant_id)
            ):
                out[r.uuid] = {"id": r.uuid, "kind": r.kind,
                               "observed_at": r.observed_at.isoformat(), "src_ip": r.src_ip,
                               "user": r.username, "message": r.message[:500], "seq": r.seq}
        return out


def silent_sensor_facts(sensor: dict[str, Any], deadline: datetime) -> Facts:
    return Facts(vm_id=sensor["vm_id"], tenant_id=sensor["tenant_id"], sensor_id=sensor["id"],
                 silent_sensors=[{**sensor, "deadline": deadline}])

