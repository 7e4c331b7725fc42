"""Errors of the guest sensor.

The guest sensor may import nothing of Vigil but :mod:`vigil.protocol`, so its errors have their
own root, :class:`SensorError`; each message says what went wrong and what to do.
"""

from __future__ import annotations


class SensorError(Exception):
    """Base of every error the guest sensor reports to its operator."""


class ConfigurationError(SensorError):
    """The sensor cannot start as configured (no token, bad URL, unusable state dir)."""


class ServerUnavailable(SensorError):
    """The server could not be reached or answered 5xx/429: retry later."""


class RequestRejected(SensorError):
    """The server refused a request with a 4xx status."""

    def __init__(self, status: int, detail: str, path: str) -> None:
        super().__init__(f"the server refused {path} with HTTP {status}: {detail}")
        self.status = status
        self.detail = detail
        self.path = path


class PayloadTooLarge(RequestRejected):
    """HTTP 413: the batch must be split."""


class AuthRejected(RequestRejected):
    """HTTP 401/403: the sensor's token (or the enroll token) was not accepted."""

    @property
    def revoked(self) -> bool:
        """True when the server says the sensor is revoked or unknown: retrying is pointless."""
        text = self.detail.lower()
        return "revoked" in text or "unknown" in text


class CredentialsRevoked(SensorError):
    """The server no longer accepts this sensor: it must be enrolled again."""
