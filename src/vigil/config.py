"""Settings: one object, read from the environment (``VIGIL_*``) and ``$VIGIL_HOME/vigil.toml``."""

from __future__ import annotations

import os
import secrets
import stat
import tomllib
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from vigil.errors import ConfigError

DEFAULT_HOME = "./vigil-data"


def vigil_home() -> Path:
    """The data directory: ``$VIGIL_HOME``, else ``./vigil-data``."""
    return Path(os.environ.get("VIGIL_HOME") or DEFAULT_HOME).resolve()


class _TomlSource(PydanticBaseSettingsSource):
    """Reads ``$VIGIL_HOME/vigil.toml`` when it exists (environment variables win)."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = vigil_home() / "vigil.toml"
        if not path.exists():
            return {}
        with path.open("rb") as fh:
            try:
                data = tomllib.load(fh)
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"{path}: not valid TOML ({exc})") from exc
        return data.get("server", data)


class Settings(BaseSettings):
    """Server settings. Unsafe values are refused unless ``dev`` is true."""

    model_config = SettingsConfigDict(env_prefix="VIGIL_", extra="ignore")

    home: Path = Field(default_factory=vigil_home)
    database_url: str | None = None
    dev: bool = False
    host: str = "127.0.0.1"
    port: int = 8740
    #: a sensor that misses this many heartbeats is shown offline
    offline_after_beats: int = 3
    heartbeat_interval: float = 10.0
    enroll_token_ttl_hours: float = 24.0
    session_hours: float = 12.0
    max_batch_bytes: int = 16 * 1024 * 1024
    cookie_secure: bool = False
    #: alerts on one VM this close together (minutes) fold into one incident
    incident_window_minutes: float = Field(default=30.0, gt=0)
    #: how often (seconds) the watchdog looks for sensors that went silent
    watchdog_interval: float = Field(default=1.0, gt=0)
    #: extra executable SHA-256s of remote-access tools, one per line (``#`` comments)
    rat_hashes_file: Path | None = None
    #: e-mail notifications: the SMTP relay and sender
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_from: str = "vigil@localhost"
    smtp_starttls: bool = False
    smtp_ssl: bool = False
    smtp_username: str | None = None
    smtp_password: str | None = None
    #: notification deliveries: attempts before giving up, first retry delay, longest delay
    notify_max_attempts: int = Field(default=8, ge=1)
    notify_retry_base: float = Field(default=2.0, gt=0)
    notify_retry_cap: float = Field(default=300.0, gt=0)
    #: how often (seconds) the notifier looks for due deliveries
    notify_interval: float = Field(default=1.0, gt=0)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _TomlSource(settings_cls))

    @field_validator("heartbeat_interval")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be positive")
        return value

    @property
    def db_url(self) -> str:
        """The SQLAlchemy URL: ``VIGIL_DATABASE_URL`` or SQLite under the data directory."""
        return self.database_url or f"sqlite:///{self.home / 'vigil.db'}"

    @property
    def secret_key_path(self) -> Path:
        return self.home / "secret.key"

    @cached_property
    def secret_key(self) -> bytes:
        """The server's secret (signs CSRF tokens); created 0600 by ``vigil init``."""
        path = self.secret_key_path
        if not path.exists():
            raise ConfigError(f"{path} is missing: run `vigil init` first")
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077 and not self.dev:
            raise ConfigError(
                f"{path} is readable by other users (mode {mode:o}): run `chmod 600 {path}`"
            )
        return bytes.fromhex(path.read_text().strip())


def write_secret_key(path: Path) -> None:
    """Create the server secret with mode 0600 (never overwriting an existing one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_hex(32) + "\n")
