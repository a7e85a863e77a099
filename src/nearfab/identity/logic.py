"""Pure rules of identity: who may do what, and how a signed record is hashed."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from nearfab.common.canonical import canonical_json, sha256_hex
from nearfab.identity.enums import Role


@dataclass(frozen=True)
class Actor:
    """The person (or system component) a use case runs for."""

    user_id: str
    username: str
    full_name: str
    roles: tuple[str, ...] = field(default_factory=tuple)
    site_id: str | None = None
    # sees every site: control-site staff and users without a home site (see permissions)
    network: bool = False
    # the web session or API token the actor came through (None: a direct service call, the
    # CLI): e-signatures use it for the continuous-session rule of 21 CFR 11.200(a)(1)
    session_id: str | None = None

    def has_any(self, roles: Iterable[Role | str]) -> bool:
        return any(str(r) in self.roles for r in roles)


def system_actor(component: str) -> Actor:
    """An automatic component acting on the platform's behalf (recorded as such in the audit)."""
    return Actor(
        user_id=f"system:{component}",
        username=f"system:{component}",
        full_name=f"nearfab {component}",
        roles=("system",),
    )


def record_hash(content: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of the record a signature is bound to."""
    return sha256_hex(canonical_json(content))
