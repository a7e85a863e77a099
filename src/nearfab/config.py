"""Settings from NEARFAB_* environment variables. Read only by bootstrap and entry points."""

from __future__ import annotations

from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import platformdirs
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _zone_name(value: str, field: str) -> str:
    """`value` if it names an IANA time zone (e.g. Europe/London), else an error naming `field`."""
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{field}: {value!r} is not a time zone (e.g. Europe/London)") from None
    return value


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("nearfab", appauthor=False))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NEARFAB_", extra="ignore")

    data_dir: Path = Field(default_factory=default_data_dir)
    database_url: str | None = None
    demo_password: str | None = None
    session_secret: str | None = None
    # set true behind TLS: the session cookie is then sent over HTTPS only
    secure_cookies: bool = False
    # networked mode: machines publish telemetry to this broker (mqtt://host:1883); unset, the
    # embedded default carries the same messages in-process
    mqtt_url: str | None = None
    # sites as nodes (docs/replication.md): the site this node owns (code or id; unset: one
    # database for the whole network, no replication) and the broker the nodes replicate
    # through (mqtt://host:1883; unset: `mqtt_url`)
    node_site: str | None = None
    replication_url: str | None = None
    # accounts and sessions (docs/accounts-and-signatures.md)
    password_min_length: int = Field(default=12, ge=8)
    password_max_age_days: int = Field(default=90, ge=1)
    password_history: int = Field(default=5, ge=1)
    lockout_after_failures: int = Field(default=5, ge=1)
    session_idle_minutes: int = Field(default=15, ge=1)
    session_lifetime_hours: int = Field(default=12, ge=1)
    totp_issuer: str = "nearfab"
    # reverse proxies whose X-Forwarded-For is believed (comma-separated IPs or CIDR networks,
    # e.g. "127.0.0.1,10.0.0.0/8"); empty (the default): the header is ignored and the login
    # throttle counts per TCP peer (docs/accounts-and-signatures.md)
    trusted_proxies: str = ""
    # request bodies (docs/prescriptions.md): refused with 413 before anything parses them
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    prescription_max_body_bytes: int = Field(default=256 * 1024, ge=1024)
    credentials_max_body_bytes: int = Field(default=8 * 1024, ge=1024)
    bulk_max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    # one FHIR Bundle may hold at most this many entries (all of them, any resource type)
    bundle_max_entries: int = Field(default=50, ge=1)
    # times are stored in UTC; pages show them in the site's local time (IANA zone names):
    # `time_zone` for every site, `site_time_zones` per site code ('{"MOB": "Europe/Dublin"}')
    time_zone: str = "Europe/London"
    site_time_zones: dict[str, str] = Field(default_factory=dict)

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        return _zone_name(value, "time_zone")

    @field_validator("site_time_zones")
    @classmethod
    def _known_zones(cls, value: dict[str, str]) -> dict[str, str]:
        return {code: _zone_name(z, f"site_time_zones.{code}") for code, z in value.items()}

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'nearfab.db'}"
