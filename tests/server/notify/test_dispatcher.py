"""The outbox and its notifier: matching, retries with backoff, giving up, leases, no double send."""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from tests.harness.pgcluster import free_port

from vigil.errors import InvalidInput
from vigil.server.db.engine import Database
from vigil.server.db.models import NotificationDelivery, utcnow
from vigil.server.notify import dispatcher
from vigil.server.notify.dispatcher import Notifier, backoff, claim_due
from vigil.server.notify.webhook import signing_secret
from vigil.server.services import notifications


def _wait(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.01)


def _notifier_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("vigil-notif")]


def test_enqueue_matches_severity_kind_and_tenant(outbox: Any, receiver: Any) -> None:
    high = outbox.channel("webhook", receiver.url, name="high")
    low = outbox.channel("webhook", receiver.url, name="low", min_severity="low")
    incidents = outbox.channel("webhook", receiver.url, name="inc", on_alerts=False,
                               min_severity="low")
    outbox.channel("webhook", receiver.url, name="off", enabled=False, min_severity="low")
    outbox.channel("webhook", receiver.url, name="globex", tenant="globex", min_severity="low")

    assert {d.channel_id for d in outbox.alert("medium")} == {low.id}
    assert {d.channel_id for d in outbox.alert("critical")} == {high.id, low.id}
    queued = outbox.alert("high", event="incident.created")
    assert {d.channel_id for d in queued} == {high.id, low.id, incidents.id}
    assert outbox.alert("critical", tenant_id=outbox.other_tenant_id)[0].channel_id != high.id

    payload = queued[0].payload
    assert payload["version"] == 1 and payload["event"] == "incident.created"
    assert payload["tenant"] == {"id": outbox.tenant_id, "name": "acme"}
    assert payload["subject"] == {"type": "alert", "id": 42} and payload["severity"] == "high"
    assert payload["data"]["vm"]["name"] == "vm-web-1"
    with pytest.raises(InvalidInput, match="unknown severity"):
        outbox.alert("severe")
    with pytest.raises(InvalidInput, match="unknown notification event"):
        outbox.alert("high", event="alert.deleted")


def test_rolled_back_enqueue_sends_nothing(outbox: Any, receiver: Any) -> None:
    outbox.channel("webhook", receiver.url)
    with pytest.raises(RuntimeError), outbox.db.write() as s:
        notifications.enqueue(s, tenant_id=outbox.tenant_id, event="alert.created",
                              subject_type="alert", subject_id=1, severity="critical",
                              payload={"title": "never stored"})
        s.flush()  # the row exists inside the transaction ...
        assert s.scalar(select(func.count()).select_from(NotificationDelivery)) == 1
        raise RuntimeError("the alert's transaction fails")  # ... and goes with it
    assert Notifier(outbox.db, outbox.settings).run_once() == 0
    assert outbox.deliveries() == [] and receiver.requests == []


def test_retries_with_backoff_then_delivers(outbox: Any, receiver: Any) -> None:
    channel = outbox.channel("webhook", receiver.url)
    receiver.secrets.append(signing_secret(outbox.settings.secret_key, channel.id))
    receiver.fail_first = 2
    notifier = Notifier(outbox.db, outbox.settings)
    notifier.start()
    try:
        outbox.alert("critical")
        _wait(lambda: outbox.deliveries()[0].status == "delivered")
    finally:
        notifier.stop()
    assert not notifier.running and _notifier_threads() == []
    reqs = receiver.requests
    assert [r.answered for r in reqs] == [500, 500, 200] and all(r.signed for r in reqs)
    assert len({r.headers["X-Vigil-Delivery"] for r in reqs}) == 1
    gap1, gap2 = reqs[1].at - reqs[0].at, reqs[2].at - reqs[1].at
    # base 0.2 s: about 0.2 s then 0.4 s (±20 % jitter, plus the 0.02 s poll)
    assert 0.15 <= gap1 < 0.3 and 0.3 <= gap2 < 0.6, (gap1, gap2)
    (d,) = outbox.deliveries()
    assert (d.status, d.attempts, d.response_status) == ("delivered", 3, 200)
    assert d.delivered_at is not None and d.last_error == "HTTP 500: no"


def test_failing_channel_gives_up_after_max_attempts(outbox: Any, receiver: Any) -> None:
    outbox.channel("webhook", receiver.url)
    refused = outbox.channel("webhook", f"http://127.0.0.1:{free_port()}/hook")
    receiver.fail_first, receiver.fail_status = -1, 503
    notifier = Notifier(outbox.db, outbox.settings)
    notifier.start()
    try:
        outbox.alert()
        _wait(lambda: all(d.status == "failed" for d in outbox.deliveries()))
        time.sleep(0.3)  # nothing more is sent once failed
    finally:
        notifier.stop()
    assert len(receiver.requests) == outbox.settings.notify_max_attempts == 4
    by_channel = {d.channel_id: d for d in outbox.deliveries()}
    answered = [d for cid, d in by_channel.items() if cid != refused.id][0]
    assert (answered.attempts, answered.response_status) == (4, 503)
    assert answered.last_error == "HTTP 503: no" and answered.delivered_at is None
    assert by_channel[refused.id].attempts == 4
    assert "ConnectError" in (by_channel[refused.id].last_error or "")


def test_backoff_grows_and_is_capped() -> None:
    for attempts, expected in [(1, 2.0), (2, 4.0), (3, 8.0), (5, 32.0)]:
        assert 0.8 * expected <= backoff(attempts, base=2.0, cap=300) <= 1.2 * expected
    assert all(backoff(20, base=2.0, cap=300) <= 300 for _ in range(100))


def test_a_crashed_send_is_retried_after_its_lease(outbox: Any, receiver: Any) -> None:
    outbox.channel("webhook", receiver.url)
    outbox.alert()
    (job,) = claim_due(outbox.db, limit=10, max_attempts=4, lease=0.3)
    # the process "dies" here: claimed, never sent, nothing recorded
    assert claim_due(outbox.db, limit=10, max_attempts=4) == []  # leased: nobody else takes it
    time.sleep(0.35)
    assert Notifier(outbox.db, outbox.settings).run_once() == 1
    (d,) = outbox.deliveries()
    assert (d.status, d.attempts) == ("delivered", 2) and len(receiver.requests) == 1
    # the dead sender's late outcome no longer applies
    stale = dispatcher.Outcome(False, 500, "late")
    assert not dispatcher.record(outbox.db, job, stale, settings=outbox.settings)
    assert outbox.deliveries()[0].status == "delivered"


def test_a_crash_during_the_last_attempt_ends_failed(outbox: Any, receiver: Any) -> None:
    outbox.channel("webhook", receiver.url)
    outbox.alert()
    with outbox.db.write() as s:
        d = s.scalars(select(NotificationDelivery)).one()
        d.attempts, d.next_attempt_at = 4, utcnow() - timedelta(seconds=1)
    assert Notifier(outbox.db, outbox.settings).run_once() == 0
    (d,) = outbox.deliveries()
    assert d.status == "failed" and "no outcome recorded" in (d.last_error or "")
    assert receiver.requests == []


def test_two_servers_never_send_one_delivery_twice(outbox: Any, receiver: Any) -> None:
    """Two notifiers with their own engines (like two server processes) share one outbox."""
    outbox.channel("webhook", receiver.url, min_severity="low")
    for _ in range(40):
        outbox.alert("low")
    receiver.delay = 0.01
    dbs = [Database(outbox.db.url) for _ in range(2)]
    notifiers = [Notifier(db, outbox.settings, workers=4) for db in dbs]
    try:
        for n in notifiers:
            n.start()
        _wait(lambda: all(d.status == "delivered" for d in outbox.deliveries()), timeout=30)
    finally:
        for n in notifiers:
            n.stop()
        for db in dbs:
            db.dispose()
    counts = Counter(r.headers["X-Vigil-Delivery"] for r in receiver.requests)
    assert len(counts) == 40 and set(counts.values()) == {1}, counts.most_common(3)
    assert {d.attempts for d in outbox.deliveries()} == {1}


def test_start_stop_is_prompt_and_leaves_nothing(outbox: Any) -> None:
    notifier = Notifier(outbox.db, outbox.settings.model_copy(update={"notify_interval": 30}))
    notifier.start()
    notifier.start()  # idempotent
    assert len(_notifier_threads()) == 1
    t0 = time.monotonic()
    notifier.stop()
    assert time.monotonic() - t0 < 1.0
    assert not notifier.running and _notifier_threads() == []


def test_the_loop_survives_a_broken_database(outbox: Any, receiver: Any,
                                             monkeypatch: pytest.MonkeyPatch,
                                             caplog: pytest.LogCaptureFixture) -> None:
    outbox.channel("webhook", receiver.url)
    original = dispatcher.claim_due
    calls = {"n": 0}

    def flaky(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] <= 2:
            raise RuntimeError("database unreachable")
        return original(*args, **kwargs)

    monkeypatch.setattr(dispatcher, "claim_due", flaky)
    notifier = Notifier(outbox.db, outbox.settings)
    notifier.start()
    try:
        outbox.alert()
        _wait(lambda: outbox.deliveries()[0].status == "delivered")
    finally:
        notifier.stop()
    assert calls["n"] > 2 and "could not claim deliveries" in caplog.text
