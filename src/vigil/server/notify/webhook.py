"""Webhooks: the payload POSTed as JSON and signed with a per-channel HMAC-SHA256 secret.

The signing secret is derived from the server's secret key and the channel id, so nothing
secret is stored with the channel; rotating the server key rotates every webhook secret.
A receiver recomputes ``HMAC-SHA256(secret, "<X-Vigil-Timestamp>.<raw body>")`` and compares
it with ``X-Vigil-Signature: sha256=<hex>`` (see ``docs/notifications.md``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any
from urllib.parse import urlsplit

import httpx

import vigil
from vigil.config import Settings
from vigil.errors import InvalidInput
from vigil.server.notify.base import Channel, Message, Outcome

SECRET_PREFIX = "vgn_"  # noqa: S105 - a prefix, not a secret
TIMEOUT = httpx.Timeout(10.0, connect=5.0)
MAX_URL = 2000


def signing_secret(server_key: bytes, channel_id: int) -> str:
    """The channel's signing secret: an HMAC of its id under the server's secret key."""
    mac = hmac.new(server_key, f"vigil/notify/webhook/{channel_id}".encode(), hashlib.sha256)
    return SECRET_PREFIX + mac.hexdigest()


def encode_body(payload: dict[str, Any]) -> bytes:
    """The exact bytes sent (and signed): compact JSON, keys sorted, UTF-8."""
    return json.dumps(payload, separators=(",", ":"), sort_keys=True,
                      ensure_ascii=False).encode("utf-8")


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Vigil-Signature`` value: ``sha256=`` and the hex HMAC of ``<timestamp>.<body>``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


class WebhookChannel(Channel):
    """POST the payload to an http(s) URL; any 2xx answer means delivered."""

    kind = "webhook"
    signed = True

    @classmethod
    def validate_target(cls, target: str, *, settings: Settings) -> str:
        url = target.strip()
        if len(url) > MAX_URL:
            raise InvalidInput(f"the webhook URL is longer than {MAX_URL} characters")
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number
        except ValueError as exc:
            raise InvalidInput(f"{url!r} is not a valid URL ({exc})") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidInput(
                f"{url!r} is not a webhook URL: give an http:// or https:// URL with a host"
            )
        if any(c.isspace() for c in url):
            raise InvalidInput("the webhook URL must not contain spaces: percent-encode them")
        return url

    @classmethod
    def redact_target(cls, target: str) -> str:
        # webhook URLs often carry a token in their path or query (chat services do)
        parts = urlsplit(target)
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        rest = "/…" if (parts.path not in ("", "/") or parts.query) else "/"
        return f"{parts.scheme}://{host}{rest}"

    def secret(self) -> str:
        return signing_secret(self.settings.secret_key, self.channel_id)

    def headers(self, message: Message, body: bytes, timestamp: str) -> dict[str, str]:
        return {
            "Content-Type": "application/json",
            "User-Agent": f"Vigil/{vigil.__version__}",
            "X-Vigil-Event": message.event,
            "X-Vigil-Delivery": str(message.delivery_id),
            "X-Vigil-Timestamp": timestamp,
            "X-Vigil-Signature": sign(self.secret(), timestamp, body),
        }

    def send(self, message: Message) -> Outcome:
        body = encode_body(message.payload)
        timestamp = str(int(time.time()))
        try:
            with httpx.Client(timeout=TIMEOUT, follow_redirects=False) as client:
                response = client.post(self.target, content=body,
                                       headers=self.headers(message, body, timestamp))
        except httpx.HTTPError as exc:
            return Outcome(False, None, f"{type(exc).__name__}: {exc}"[:500])
        if 200 <= response.status_code < 300:
            return Outcome(True, response.status_code)
        excerpt = response.text[:200].strip()
        return Outcome(False, response.status_code,
                       f"HTTP {response.status_code}" + (f": {excerpt}" if excerpt else ""))
