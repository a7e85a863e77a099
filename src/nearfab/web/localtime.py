"""Times as people at a site read them: the platform stores UTC; pages show the site's local
time with its zone ("2026-01-05 09:21 CET"). A site's zone is `site_time_zones[code]`, else the
network's `time_zone` (config.py; both IANA names checked at start-up)."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from nearfab.config import Settings

FORMAT = "%Y-%m-%d %H:%M %Z"


def zone_of(settings: Settings, site_code: str | None = None) -> ZoneInfo:
    """The zone a site's people read times in (the network's when the site has none)."""
    name = settings.site_time_zones.get(site_code or "", settings.time_zone)
    return ZoneInfo(name)


def moment(value: object) -> datetime | None:
    """An ISO text (EPCIS's `...Z` included) or a datetime as an aware UTC datetime; None when
    it is neither (a naive time is the platform's: UTC)."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    if not isinstance(value, datetime):
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def local(value: object, zone: ZoneInfo, fmt: str = FORMAT) -> str:
    """`value` in `zone`, with the zone's abbreviation; "—" for nothing, the text as given when
    it is not a time."""
    if value in (None, ""):
        return "—"
    at = moment(value)
    if at is None:
        return str(value)
    return at.astimezone(zone).strftime(fmt)
