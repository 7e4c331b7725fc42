"""The e-mail channel: plain-text messages through a real local SMTP server (aiosmtpd)."""

from __future__ import annotations

import email
import email.policy
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vigil.errors import InvalidInput
from vigil.server.notify import Message, make_channel
from vigil.server.notify.dispatcher import Notifier
from vigil.server.notify.email import EmailChannel


def _parse(envelope: Any) -> Any:
    return email.message_from_bytes(envelope.original_content or envelope.content,
                                    policy=email.policy.default)


def test_alert_mail_through_the_outbox(outbox: Any, smtp_server: Any) -> None:
    channel = outbox.channel("email", "soc@example.org, Oncall@Example.org,soc@example.org")
    assert channel.target == "soc@example.org,Oncall@Example.org"
    outbox.alert("critical")
    assert Notifier(outbox.db, outbox.settings).run_once() == 1
    (env,) = smtp_server.wait_for(1)
    assert env.mail_from == "vigil@example.org"
    assert env.rcpt_tos == ["soc@example.org", "Oncall@Example.org"]
    msg = _parse(env)
    assert msg["Subject"] == "[Vigil CRITICAL] Reverse shell on vm-web-1"
    assert msg["To"] == "soc@example.org, Oncall@Example.org"
    assert msg.get_content_type() == "text/plain"
    text = msg.get_content()
    assert "Severity:    critical" in text and "Tenant:      acme" in text
    assert "VM:          vm-web-1" in text and "T1059.004" in text
    assert "bash has a TCP socket" in text
    (delivery,) = outbox.deliveries()
    assert msg["X-Vigil-Delivery"] == str(delivery.id)
    assert (delivery.status, delivery.attempts, delivery.response_status) == ("delivered", 1, 250)


def test_unreachable_relay_is_retried(outbox: Any) -> None:
    # the settings name a loopback port where nothing listens (no smtp_server fixture)
    outbox.channel("email", "soc@example.org")
    outbox.alert()
    Notifier(outbox.db, outbox.settings).run_once()
    (delivery,) = outbox.deliveries()
    assert delivery.status == "pending" and delivery.attempts == 1
    assert "Connection refused" in (delivery.last_error or "")


@pytest.mark.parametrize("target", ["", " , ", "not-an-address", "a@b@c", "soc@example.org\nBcc: x@y",
                                    ",".join(f"u{i}@example.org" for i in range(21))])
def test_bad_recipients_are_refused(settings: Any, target: str) -> None:
    with pytest.raises(InvalidInput):
        EmailChannel.validate_target(target, settings=settings)


def test_no_relay_configured(settings: Any) -> None:
    bare = settings.model_copy(update={"smtp_host": None})
    with pytest.raises(InvalidInput, match="SMTP relay"):
        EmailChannel.validate_target("soc@example.org", settings=bare)
    outcome = make_channel("email", channel_id=1, target="soc@example.org",
                           settings=bare).send(Message(1, "alert.created", {}))
    assert not outcome.delivered and "smtp_host" in (outcome.error or "")


def test_subject_cannot_inject_headers(settings: Any, smtp_server: Any) -> None:
    channel = make_channel("email", channel_id=1, target="soc@example.org", settings=settings)
    outcome = channel.send(Message(3, "alert.created", {
        "severity": "high", "data": {"title": "evil\r\nBcc: attacker@example.net", "vm": None}}))
    assert outcome.delivered, outcome.error
    (env,) = smtp_server.wait_for(1)
    assert env.rcpt_tos == ["soc@example.org"]
    assert _parse(env)["Subject"] == "[Vigil HIGH] evil Bcc: attacker@example.net"


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    return cert, key


@pytest.fixture
def tls_smtp(settings: Any, tls_files: tuple[Path, Path],
             monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """An SMTP server that requires STARTTLS and a login; the client trusts its certificate."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword
    from tests.server.notify.helpers import Inbox

    cert, key = tls_files
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    inbox = Inbox()

    def authenticator(_server: Any, _session: Any, _envelope: Any, _mechanism: str,
                      data: Any) -> Any:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"vigil",
                                                                                  b"relay-pw")
        if isinstance(data, LoginPassword):
            inbox.logins.append((data.login, data.password))
        return AuthResult(success=ok, handled=False)

    controller = Controller(inbox, hostname="127.0.0.1", port=settings.smtp_port,
                            tls_context=context, require_starttls=True, auth_required=True,
                            authenticator=authenticator)
    controller.start()
    try:
        yield inbox
    finally:
        controller.stop()


def test_starttls_and_login(settings: Any, tls_smtp: Any) -> None:
    good = settings.model_copy(update={"smtp_starttls": True, "smtp_username": "vigil",
                                       "smtp_password": "relay-pw"})
    outcome = make_channel("email", channel_id=1, target="soc@example.org",
                           settings=good).send(Message(1, "alert.created", {"severity": "low"}))
    assert outcome.delivered, outcome.error
    assert tls_smtp.wait_for(1) and tls_smtp.logins == [(b"vigil", b"relay-pw")]
    wrong = good.model_copy(update={"smtp_password": "nope"})
    outcome = make_channel("email", channel_id=1, target="soc@example.org",
                           settings=wrong).send(Message(2, "alert.created", {}))
    assert not outcome.delivered and outcome.response_status == 535
    plain = settings.model_copy(update={"smtp_username": "vigil", "smtp_password": "relay-pw"})
    outcome = make_channel("email", channel_id=1, target="soc@example.org",
                           settings=plain).send(Message(3, "alert.created", {}))
    assert not outcome.delivered  # the relay insists on STARTTLS first
    assert len(tls_smtp.envelopes) == 1
