"""Convention tests: every rule is complete, cites known techniques and has its own test."""

from __future__ import annotations

import re
from pathlib import Path

from vigil.server.detect.attack import KILL_CHAIN, TECHNIQUES
from vigil.server.detect.base import SEVERITIES, all_rules

HERE = Path(__file__).parent
CONTROL = re.compile(r"^[A-Z]{2}-\d{1,2}(\(\d+\))?$")


def test_every_rule_is_complete() -> None:
    rules = all_rules()
    assert len(rules) >= 15
    for rule in rules:
        assert rule.description() and len(rule.description()) > 40, rule.id
        assert rule.title and rule.techniques and rule.controls and rule.evidence_fields, rule.id
        assert rule.severity in SEVERITIES and rule.tactic in KILL_CHAIN, rule.id
        assert all(CONTROL.match(c) for c in rule.controls), rule.id
        assert all(t in TECHNIQUES for t in rule.techniques), rule.id
        assert rule.inputs, rule.id


def test_every_rule_has_its_own_test() -> None:
    tests = "\n".join(p.read_text() for p in HERE.glob("test_*.py") if p.name != Path(__file__).name)
    missing = [r.id for r in all_rules() if type(r).__name__ not in tests]
    assert missing == []


def test_technique_table_is_well_formed() -> None:
    stix = re.compile(r"^attack-pattern--[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
    assert len({t.stix_id for t in TECHNIQUES.values()}) == len(TECHNIQUES)
    for tid, t in TECHNIQUES.items():
        assert t.id == tid and re.match(r"^T\d{4}(\.\d{3})?$", tid)
        assert stix.match(t.stix_id) and t.tactics and set(t.tactics) <= set(KILL_CHAIN)
    assert TECHNIQUES["T1059.004"].url == "https://attack.mitre.org/techniques/T1059/004/"


def test_issue_techniques_are_all_covered() -> None:
    covered = {t for r in all_rules() for t in r.techniques}
    wanted = {"T1110.001", "T1078", "T1110.003", "T1059.004", "T1095", "T1068", "T1055",
              "T1574.006", "T1053.003", "T1543.002", "T1098.004", "T1219", "T1070.002",
              "T1070.003", "T1562.001"}
    assert wanted <= covered | {"T1571"}


def test_every_rule_is_documented() -> None:
    docs = (HERE.parents[2] / "docs" / "detection.md").read_text()
    missing = [r.id for r in all_rules() if f"`{r.id}`" not in docs]
    assert missing == []
