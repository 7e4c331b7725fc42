"""Rules decoy-connection, decoy-login, canary-file."""

from __future__ import annotations

from tests.server.detect.helpers import event, facts, run

from vigil.server.detect.rules.decoys import CanaryFileRule, DecoyConnectionRule, DecoyLoginRule


def test_each_touch_alerts_with_the_source_and_what_was_tried() -> None:
    conn = event("decoy_connection", src_ip="198.51.100.4",
                 data={"decoy": "ssh", "port": 2222, "payload": "SSH-2.0-libssh"})
    login = event("decoy_login", src_ip="198.51.100.4", user="admin",
                  data={"decoy": "http", "port": 8081, "password": "hunter2"})
    canary = event("canary_accessed", path="/root/creds.txt",
                   data={"how": "read", "pid": 77, "process": "cat"})
    f = facts(events=[conn, login, canary])
    (c,) = run(DecoyConnectionRule(), f)
    (lg,) = run(DecoyLoginRule(), f)
    (cn,) = run(CanaryFileRule(), f)
    assert c.src_ip == "198.51.100.4" and c.evidence["payload"] == "SSH-2.0-libssh"
    assert lg.evidence["user"] == "admin" and lg.evidence["password"] == "hunter2"
    assert cn.evidence["process"] == "cat" and "cat (pid 77)" in cn.reason
