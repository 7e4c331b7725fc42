"""The webhook channel: signed JSON POSTs to a real HTTP receiver; URLs are checked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from vigil.config import Settings, write_secret_key
from vigil.errors import InvalidInput
from vigil.server.notify import Channel, Message, make_channel
from vigil.server.notify.webhook import WebhookChannel, signing_secret


@pytest.fixture
def plain_settings(tmp_path: Path) -> Settings:
    write_secret_key(tmp_path / "secret.key")
    return Settings(home=tmp_path)


def _message(delivery_id: int = 7) -> Message:
    return Message(delivery_id, "alert.created",
                   {"event": "alert.created", "severity": "high",
                    "data": {"title": "Reverse shell", "note": "ünïcode"}})


def test_channels_register_by_kind() -> None:
    assert Channel.registry["webhook"] is WebhookChannel
    assert {"webhook", "email"} <= set(Channel.registry)
    with pytest.raises(ValueError, match="two notification channels"):
        type("Dup", (Channel,), {"kind": "webhook"})


def test_signed_post_reaches_a_real_receiver(receiver: Any, plain_settings: Settings) -> None:
    secret = signing_secret(plain_settings.secret_key, 5)
    receiver.secrets.append(secret)
    channel = make_channel("webhook", channel_id=5, target=receiver.url, settings=plain_settings)
    outcome = channel.send(_message())
    assert outcome.delivered and outcome.response_status == 200 and outcome.error is None
    (req,) = receiver.requests
    assert req.signed, "the receiver could not verify X-Vigil-Signature"
    assert req.path == "/hook"
    assert req.headers["Content-Type"] == "application/json"
    assert req.headers["X-Vigil-Event"] == "alert.created"
    assert req.headers["X-Vigil-Delivery"] == "7"
    assert req.headers["X-Vigil-Signature"].startswith("sha256=")
    assert req.json == _message().payload


def test_another_channels_secret_does_not_verify(receiver: Any, plain_settings: Settings) -> None:
    assert signing_secret(plain_settings.secret_key, 5) != signing_secret(
        plain_settings.secret_key, 6)
    receiver.secrets.append(signing_secret(plain_settings.secret_key, 6))
    channel = make_channel("webhook", channel_id=5, target=receiver.url, settings=plain_settings)
    outcome = channel.send(_message())
    assert not outcome.delivered and outcome.response_status == 401
    assert outcome.error is not None and outcome.error.startswith("HTTP 401")


def test_errors_and_non_2xx_are_not_delivered(receiver: Any, plain_settings: Settings) -> None:
    from tests.harness.pgcluster import free_port

    closed = make_channel("webhook", channel_id=1, target=f"http://127.0.0.1:{free_port()}/x",
                          settings=plain_settings)
    outcome = closed.send(_message())
    assert not outcome.delivered and outcome.response_status is None
    assert outcome.error and "Connect" in outcome.error
    receiver.fail_first, receiver.fail_status = 1, 302
    outcome = make_channel("webhook", channel_id=1, target=receiver.url,
                           settings=plain_settings).send(_message())
    assert not outcome.delivered and outcome.response_status == 302


@pytest.mark.parametrize("url", ["ftp://example.org/x", "example.org/hook", "https:///nohost",
                                 "http://exa mple.org/", "https://example.org:99999/",
                                 "https://example.org/" + "a" * 2000, "javascript:alert(1)"])
def test_bad_urls_are_refused(url: str, plain_settings: Settings) -> None:
    with pytest.raises(InvalidInput):
        WebhookChannel.validate_target(url, settings=plain_settings)


def test_good_urls_and_redaction(plain_settings: Settings) -> None:
    url = WebhookChannel.validate_target("  https://hooks.example.org/T0/B1/secret?x=1 ",
                                         settings=plain_settings)
    assert url == "https://hooks.example.org/T0/B1/secret?x=1"
    assert WebhookChannel.redact_target(url) == "https://hooks.example.org/…"
    assert WebhookChannel.redact_target("http://10.0.0.5:8080/") == "http://10.0.0.5:8080/"


def test_body_is_compact_sorted_utf8(receiver: Any, plain_settings: Settings) -> None:
    make_channel("webhook", channel_id=2, target=receiver.url,
                 settings=plain_settings).send(_message())
    body = receiver.requests[0].body
    assert body == json.dumps(_message().payload, separators=(",", ":"), sort_keys=True,
                              ensure_ascii=False).encode()
