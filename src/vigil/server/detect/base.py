"""The rule registry and what a rule sees.

A rule is a small class: ``id``, ``title``, a docstring that says what it detects and why,
ATT&CK ``techniques`` and the ``tactic`` it stands for, ``severity``, NIST SP 800-53
``controls``, the ``evidence_fields`` it cites, the ``inputs`` it looks at, and one method,
:meth:`Rule.evaluate`, that reads what arrived (:class:`Facts`) and yields :class:`Finding`\\ s.
Rules never do I/O: what they remember goes through :class:`RuleContext.state`, which the engine
keeps in the database so it survives restarts and is shared by every server process.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Protocol

from vigil.server.detect.attack import technique

SEVERITIES = ("info", "low", "medium", "high", "critical")
SEVERITY_RANK = {name: i for i, name in enumerate(SEVERITIES)}


@dataclass
class Finding:
    """One thing a rule found; the engine turns it into an alert (once per ``subject``)."""

    #: what the alert is about (a process key, a source address, a path and hash...); the
    #: engine raises one alert per rule, VM and subject however often it is seen again
    subject: str
    observed_at: datetime
    reason: str
    evidence: dict[str, Any]
    src_ip: str | None = None
    #: overrides of the rule's own values, when the finding knows better (e.g. T1571)
    techniques: tuple[str, ...] | None = None
    severity: str | None = None
    title: str | None = None
    #: security events the alert cites; the engine adds them to ``evidence["events"]``
    event_ids: list[str] = field(default_factory=list)


@dataclass
class Change:
    """An inventory item that appeared (``old`` is None) or changed in a snapshot."""

    item: dict[str, Any]
    old: dict[str, Any] | None
    taken_at: datetime


@dataclass
class Facts:
    """What one batch brought about one VM: new events and inventory changes."""

    vm_id: int | None
    tenant_id: int
    sensor_id: str
    events: list[dict[str, Any]] = field(default_factory=list)
    changes: dict[str, list[Change]] = field(default_factory=dict)
    #: for the watchdog: sensors that went silent (dicts with sensor fields)
    silent_sensors: list[dict[str, Any]] = field(default_factory=list)

    _grouped: dict[tuple[str, ...], dict[str, list[dict[str, Any]]]] = field(
        default_factory=dict, repr=False)

    def events_of(self, *kinds: str) -> Iterator[dict[str, Any]]:
        for event in self.events:
            if event["kind"] in kinds:
                yield event

    def by_source(self, *kinds: str) -> dict[str, list[dict[str, Any]]]:
        """Events of ``kinds`` with a source address, grouped by it, each group in time order
        (computed once per batch, whichever rules ask)."""
        if kinds not in self._grouped:
            grouped: dict[str, list[dict[str, Any]]] = {}
            for event in self.events:
                if event["kind"] in kinds and event.get("src_ip"):
                    grouped.setdefault(event["src_ip"], []).append(event)
            for events in grouped.values():
                events.sort(key=lambda e: e["observed_at"])
            self._grouped[kinds] = grouped
        return self._grouped[kinds]


class StateHandle(Protocol):
    """A rule's remembered data under one key; ``data`` is a JSON-able dict to mutate."""

    data: dict[str, Any]

    def save(self, *, expires_at: datetime | None = None) -> None: ...


class RuleContext(Protocol):
    """What the engine lends a rule while it evaluates."""

    now: datetime

    def state(self, rule: Rule, key: str, *, shared: bool = False) -> StateHandle:
        """The rule's data under ``key`` for this VM (``shared``: for the whole tenant)."""
        ...

    def preload(self, rule: Rule, keys: list[str], *, shared: bool = False) -> None:
        """Load many keys in one query before asking :meth:`state` for each."""
        ...

    def processes(self) -> dict[int, dict[str, Any]]:
        """The VM's current processes by pid (after this batch)."""
        ...

    def connections(self) -> list[dict[str, Any]]:
        """The VM's current connections (after this batch)."""
        ...

    def listening(self) -> list[dict[str, Any]]:
        """The VM's current listening sockets (after this batch)."""
        ...

    def known_rat_hashes(self) -> set[str]:
        """Executable SHA-256s of remote-access tools configured for this server."""
        ...


class Rule:
    """Base of every detection rule; subclasses register themselves by ``id``."""

    registry: ClassVar[dict[str, type[Rule]]] = {}

    id: ClassVar[str]
    title: ClassVar[str]
    techniques: ClassVar[tuple[str, ...]]
    tactic: ClassVar[str]
    severity: ClassVar[str]
    controls: ClassVar[tuple[str, ...]]
    #: the evidence keys its alerts carry (documented in ``GET /api/v1/rules``)
    evidence_fields: ClassVar[tuple[str, ...]]
    #: "event:<kind>" for security events, or an inventory kind ("processes", "connections"...),
    #: or "watchdog" for rules the watchdog runs
    inputs: ClassVar[tuple[str, ...]]
    #: rules that look at the same things may keep one state row per key between them
    state_namespace: ClassVar[str | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "id" not in cls.__dict__:
            return  # an abstract intermediate class
        if cls.id in Rule.registry:
            raise ValueError(f"two rules share the id {cls.id!r}")
        for tid in cls.techniques:
            technique(tid)  # KeyError at import time, not at the first alert
        if cls.severity not in SEVERITY_RANK:
            raise ValueError(f"rule {cls.id}: unknown severity {cls.severity!r}")
        Rule.registry[cls.id] = cls

    @classmethod
    def description(cls) -> str:
        return " ".join((cls.__doc__ or "").split())

    def wants(self, facts: Facts) -> bool:
        """True when the batch holds anything this rule looks at."""
        for name in self.inputs:
            if name.startswith("event:"):
                kind = name[6:]
                if any(e["kind"] == kind for e in facts.events):
                    return True
            elif facts.changes.get(name):
                return True
        return False

    def evaluate(self, facts: Facts, ctx: RuleContext) -> Iterator[Finding]:
        raise NotImplementedError


def all_rules() -> list[Rule]:
    """One instance of every registered rule (importing the rule modules registers them)."""
    import vigil.server.detect.rules  # noqa: F401  (registers the rule classes)

    return [cls() for cls in Rule.registry.values()]


def max_severity(*values: str) -> str:
    return max(values, key=lambda s: SEVERITY_RANK.get(s, 0))
