"""Secrets: passwords (scrypt), random tokens (only their SHA-256 is stored), CSRF tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "maxmem": 64 * 1024 * 1024, "dklen": 32}

#: Token prefixes make a leaked token recognisable (secret scanners, logs).
API_PREFIX = "vgu_"
ENROLL_PREFIX = "vge_"
SENSOR_PREFIX = "vgs_"
SESSION_PREFIX = "vgw_"


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, **_SCRYPT)
    return f"scrypt${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, salt, digest = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    candidate = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), **_SCRYPT)
    return hmac.compare_digest(candidate.hex(), digest)


def new_token(prefix: str) -> str:
    """A 256-bit random token with a recognisable prefix."""
    return prefix + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """Tokens are high-entropy, so one SHA-256 suffices (no password stretching needed)."""
    return hashlib.sha256(token.encode()).hexdigest()


def sensor_token(sensor_id: str, secret: str) -> str:
    return f"{SENSOR_PREFIX}{sensor_id}_{secret}"


def split_sensor_token(token: str) -> tuple[str, str] | None:
    """``vgs_<uuid>_<secret>`` -> (uuid, secret), or None when malformed."""
    if not token.startswith(SENSOR_PREFIX):
        return None
    body = token[len(SENSOR_PREFIX):]
    sensor_id, sep, secret = body.partition("_")
    if not sep or len(sensor_id) != 36 or not secret:
        return None
    return sensor_id, secret


def csrf_token(key: bytes, session_token: str) -> str:
    """The CSRF token of a portal session: an HMAC of the session token."""
    mac = hmac.new(key, session_token.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


def constant_time_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
