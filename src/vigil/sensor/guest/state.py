"""The sensor's state directory: credentials, offsets, baselines and the spool live here.

The directory is kept at mode 0700 and every file in it is written atomically at mode 0600, so a
crash never leaves half a file and other local users never read the sensor's token.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigurationError

log = logging.getLogger(__name__)

CREDENTIALS_FILE = "credentials.json"


@dataclass(frozen=True)
class Credentials:
    """What enrollment returned: the sensor's identity and its bearer token."""

    sensor_id: str
    token: str
    server: str
    tenant: str
    vm_id: int | None = None


class StateDir:
    """A directory of small JSON files owned by the sensor."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def ensure(self) -> None:
        """Create the directory (mode 0700), or tighten an existing one to 0700."""
        try:
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
            if self.path.stat().st_mode & 0o077:
                self.path.chmod(0o700)
        except OSError as exc:
            raise ConfigurationError(
                f"cannot use the state directory {self.path}: {exc.strerror or exc}; "
                "choose another one with --state-dir or run as a user who may write there"
            ) from exc

    def file(self, name: str) -> Path:
        """The path of ``name`` inside the state directory."""
        return self.path / name

    def read_json(self, name: str, default: Any = None) -> Any:
        """The JSON content of ``name``, or ``default`` when it is missing or unreadable."""
        try:
            with open(self.file(name), encoding="utf-8") as handle:
                return json.load(handle)
        except FileNotFoundError:
            return default
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable state file %s: %s", self.file(name), exc)
            return default

    def write_json(self, name: str, value: Any, *, sync: bool = False) -> None:
        """Replace ``name`` atomically with ``value`` as JSON, mode 0600."""
        target = self.file(name)
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(json.dumps(value, separators=(",", ":")))
                if sync:
                    handle.flush()
                    os.fsync(handle.fileno())
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        if sync:
            dir_fd = os.open(target.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    def load_credentials(self) -> Credentials | None:
        """The saved credentials, or None before enrollment."""
        path = self.file(CREDENTIALS_FILE)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            return Credentials(
                sensor_id=str(raw["sensor_id"]),
                token=str(raw["token"]),
                server=str(raw.get("server", "")),
                tenant=str(raw.get("tenant", "")),
                vm_id=raw.get("vm_id"),
            )
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigurationError(
                f"the credentials file {path} is unreadable or damaged ({exc}); "
                "remove it and enroll again with a new enroll token"
            ) from exc

    def save_credentials(self, credentials: Credentials) -> None:
        """Write the credentials atomically, mode 0600, synced to disk."""
        self.write_json(CREDENTIALS_FILE, asdict(credentials), sync=True)
