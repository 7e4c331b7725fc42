"""The sensor's HTTP client for the server's sensor API (urllib, JSON, bearer token)."""

from __future__ import annotations

import json
import random
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from vigil.protocol import ENROLL_PATH, HEARTBEAT_PATH, INGEST_PATH, TASK_RESULT_PATH

from .errors import (
    AuthRejected,
    ConfigurationError,
    PayloadTooLarge,
    RequestRejected,
    ServerUnavailable,
)


def sensor_version() -> str:
    """Vigil's version, or "unknown" when the package metadata cannot be imported."""
    try:
        from vigil import __version__
    except ImportError:
        return "unknown"
    return str(__version__)


def normalise_server_url(url: str) -> str:
    """``url`` without a trailing slash; refuses anything but http(s)://host[:port][/path]."""
    parsed = urllib.parse.urlsplit(url.strip())
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ConfigurationError(
            f"--server must be an http:// or https:// URL such as https://vigil.example:8443, not {url!r}"
        )
    return url.strip().rstrip("/")


def _detail(body: bytes) -> str:
    """The server's explanation in an error response (FastAPI's ``detail``), as one line."""
    try:
        payload = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace").strip()[:500] or "(no detail)"
    detail = payload.get("detail", payload) if isinstance(payload, dict) else payload
    if isinstance(detail, list):
        parts = []
        for item in detail[:5]:
            if isinstance(item, dict):
                where = ".".join(str(p) for p in item.get("loc", []))
                parts.append(f"{where}: {item.get('msg', item)}")
            else:
                parts.append(str(item))
        return "; ".join(parts)
    return str(detail)[:500]


class SensorClient:
    """Posts JSON to the server and maps HTTP outcomes to the sensor's errors."""

    def __init__(self, server: str, token: str | None = None, *, timeout: float = 15.0) -> None:
        self.server = normalise_server_url(server)
        self.token = token
        self.timeout = timeout
        self.user_agent = f"vigil-sensor-guest/{sensor_version()}"

    def enroll(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST an EnrollRequest; returns the EnrollResponse."""
        return self.post(ENROLL_PATH, body, auth=False)

    def heartbeat(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST a HeartbeatRequest; returns the HeartbeatResponse (with pending tasks)."""
        return self.post(HEARTBEAT_PATH, body)

    def ingest(self, batch: dict[str, Any]) -> dict[str, Any]:
        """POST an IngestBatch; returns the IngestAck."""
        return self.post(INGEST_PATH, batch)

    def task_result(self, task_id: int, body: dict[str, Any]) -> dict[str, Any]:
        """POST a TaskResult for ``task_id``."""
        return self.post(TASK_RESULT_PATH.format(task_id=task_id), body)

    def post(self, path: str, body: dict[str, Any], *, auth: bool = True) -> dict[str, Any]:
        """POST ``body`` as JSON to ``path``; returns the decoded JSON answer.

        Raises ServerUnavailable (retry later), PayloadTooLarge, AuthRejected or RequestRejected.
        """
        data = json.dumps(body, separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": self.user_agent,
        }
        if auth and self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        # the URL's scheme was checked to be http(s) by normalise_server_url
        request = urllib.request.Request(  # noqa: S310
            self.server + path, data=data, headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            detail = _detail(raw)
            status = exc.code
            if status >= 500 or status in (408, 429):
                raise ServerUnavailable(f"the server answered {path} with HTTP {status}: {detail}") from None
            if status == 413:
                raise PayloadTooLarge(status, detail, path) from None
            if status in (401, 403):
                raise AuthRejected(status, detail, path) from None
            raise RequestRejected(status, detail, path) from None
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ServerUnavailable(f"cannot reach {self.server}: {reason}") from None
        try:
            answer = json.loads(raw) if raw else {}
        except ValueError as exc:
            raise ServerUnavailable(f"the server answered {path} with invalid JSON: {exc}") from None
        return answer if isinstance(answer, dict) else {"result": answer}


class Backoff:
    """Capped exponential backoff with jitter: 1, 2, 4 ... ``cap`` seconds."""

    def __init__(self, base: float = 1.0, cap: float = 30.0) -> None:
        self.base = base
        self.cap = cap
        self.failures = 0

    def next_delay(self) -> float:
        """The delay before the next try, after one more failure."""
        delay = min(self.cap, self.base * (2**self.failures))
        self.failures += 1
        return delay * random.uniform(0.8, 1.0)  # noqa: S311 - jitter, not a secret

    def reset(self) -> None:
        """Forget past failures after a success."""
        self.failures = 0
