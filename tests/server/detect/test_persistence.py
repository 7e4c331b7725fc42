"""Rule persistence: each path names its technique."""

from __future__ import annotations

import pytest
from tests.server.detect.helpers import event, facts, run

from vigil.server.detect.rules.persistence import PersistenceRule


@pytest.mark.parametrize(("path", "technique", "severity"), [
    ("/etc/cron.d/backdoor", "T1053.003", "medium"),
    ("/var/spool/cron/crontabs/www-data", "T1053.003", "medium"),
    ("/etc/systemd/system/updater.service", "T1543.002", "medium"),
    ("/home/u/.config/systemd/user/a.service", "T1543.002", "medium"),
    ("/root/.ssh/authorized_keys", "T1098.004", "high"),
    ("/etc/ld.so.preload", "T1574.006", "critical"),
    ("/home/u/.bashrc", "T1546.004", "medium"),
    ("/etc/rc.local", "T1037.004", "medium"),
])
def test_paths(path: str, technique: str, severity: str) -> None:
    ev = event("persistence_created", path=path, data={"sha256": "ab" * 32, "lines": ["x"]})
    (found,) = run(PersistenceRule(), facts(events=[ev]))
    assert found.techniques == (technique,) and found.severity == severity
    assert found.evidence["path"] == path and found.evidence["event"]["id"] == ev["id"]


def test_deletions_and_unknown_paths_are_not_persistence() -> None:
    events = [event("persistence_deleted", path="/etc/cron.d/old"),
              event("persistence_created", path="/etc/motd")]
    assert run(PersistenceRule(), facts(events=events)) == []
