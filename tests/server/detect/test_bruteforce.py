"""Rules ssh-password-guessing, ssh-login-after-failures, ssh-password-spraying."""

from __future__ import annotations

from tests.server.detect.helpers import T0, MemoryContext, event, facts, run, seconds

from vigil.server.detect.rules.bruteforce import (
    SshLoginAfterFailuresRule,
    SshPasswordGuessingRule,
    SshPasswordSprayingRule,
)


def _fails(n: int, src: str = "203.0.113.9", user: str = "root", start: float = 0, step: float = 1):
    return [event("ssh_login_failed", at=T0 + seconds(start + i * step), src_ip=src, user=user)
            for i in range(n)]


def test_guessing_fires_once_at_the_threshold_across_batches() -> None:
    rule, ctx = SshPasswordGuessingRule(), MemoryContext()
    assert run(rule, facts(events=_fails(3)), ctx) == []
    found = run(rule, facts(events=_fails(4, start=3)), ctx)
    assert len(found) == 1
    assert found[0].src_ip == "203.0.113.9"
    assert found[0].evidence["failures"] == 5
    assert len(found[0].event_ids) == 5
    assert found[0].observed_at == T0 + seconds(4)
    assert run(rule, facts(events=_fails(10, start=10)), ctx) == []  # same episode: no repeat


def test_guessing_ignores_slow_failures_and_other_sources() -> None:
    rule = SshPasswordGuessingRule()
    assert run(rule, facts(events=_fails(6, step=60))) == []  # 6 failures over 5 minutes
    mixed = _fails(2, src="198.51.100.1") + _fails(2, src="198.51.100.2") + _fails(2, src="198.51.100.3")
    assert run(rule, facts(events=mixed)) == []


def test_guessing_new_episode_after_a_quiet_half_hour() -> None:
    rule, ctx = SshPasswordGuessingRule(), MemoryContext()
    assert len(run(rule, facts(events=_fails(5)), ctx)) == 1
    later = run(rule, facts(events=_fails(5, start=3600)), ctx)
    assert len(later) == 1 and later[0].subject != "x"


def test_login_after_failures_is_high_and_cites_the_login() -> None:
    rule, ctx = SshLoginAfterFailuresRule(), MemoryContext()
    ok = event("ssh_login_success", at=T0 + seconds(30), src_ip="203.0.113.9", user="alice")
    found = run(rule, facts(events=[*_fails(6, user="alice"), ok]), ctx)
    assert len(found) == 1
    assert found[0].evidence["user"] == "alice" and found[0].evidence["failures_before"] == 6
    assert found[0].evidence["login"]["id"] == ok["id"]


def test_a_correct_login_or_one_typo_is_no_alert() -> None:
    rule = SshLoginAfterFailuresRule()
    ok = event("ssh_login_success", at=T0 + seconds(5), src_ip="203.0.113.9", user="alice")
    assert run(rule, facts(events=[ok])) == []
    assert run(rule, facts(events=[*_fails(1, user="alice"), ok])) == []


def test_spraying_counts_distinct_users() -> None:
    rule = SshPasswordSprayingRule()
    same_user = _fails(10)
    assert run(rule, facts(events=same_user)) == []
    users = [event("ssh_invalid_user", at=T0 + seconds(i), src_ip="203.0.113.7", user=f"u{i}")
             for i in range(5)]
    found = run(rule, facts(events=users))
    assert len(found) == 1 and found[0].evidence["users"] == [f"u{i}" for i in range(5)]
