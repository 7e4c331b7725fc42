"""One exception hierarchy: every error a user can cause says what was wrong and what to do."""

from __future__ import annotations


class VigilError(Exception):
    """Base of every error Vigil raises on purpose."""

    status_code = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(VigilError):
    """The configuration is missing or unsafe."""


class NotFound(VigilError):
    status_code = 404


class Conflict(VigilError):
    status_code = 409


class AuthError(VigilError):
    """Credentials missing, wrong, expired or revoked."""

    status_code = 401


class Forbidden(VigilError):
    status_code = 403


class InvalidInput(VigilError):
    status_code = 422
