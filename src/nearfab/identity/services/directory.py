"""Finding accounts, and the actor a user acts as (every other users module builds on this)."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from nearfab.common.errors import NotFound, ValidationFailed
from nearfab.identity.enums import Role
from nearfab.identity.logic import Actor
from nearfab.identity.models import User
from nearfab.identity.permissions import Permission, authorize
from nearfab.uow import UnitOfWork


def actor_of(user: User, session: Session, session_id: str | None = None) -> Actor:
    """The actor a user acts as. A user with no home site, or based at the control site,
    sees the network; anyone else sees their own site (identity/permissions.py)."""
    return actor_from(
        user_id=user.id,
        username=user.username,
        full_name=user.full_name,
        roles=user.roles,
        home_site_id=user.home_site_id,
        session=session,
        session_id=session_id,
    )


def actor_from(
    *,
    user_id: str,
    username: str,
    full_name: str,
    roles: Iterable[str],
    home_site_id: str | None,
    session: Session,
    session_id: str | None = None,
) -> Actor:
    """`actor_of` from a user's columns (the token look-up reads them without the row)."""
    return Actor(
        user_id=user_id,
        username=username,
        full_name=full_name,
        roles=tuple(roles),
        site_id=home_site_id,
        network=_is_control_site(session, home_site_id),
        session_id=session_id,
    )


# site id -> is it the control site; a site's kind is fixed when it is created and ids are
# never reused, so every request after the first skips the query
_CONTROL_SITES: dict[str, bool] = {}


def _is_control_site(session: Session, site_id: str | None) -> bool:
    if site_id is None:
        return True
    known = _CONTROL_SITES.get(site_id)
    if known is not None:
        return known
    # identity sits below network in the layers, so it reads the site's kind by name only
    kind = session.execute(
        text("SELECT kind FROM sites WHERE id = :id"), {"id": site_id}
    ).scalar_one_or_none()
    if kind is not None:
        _CONTROL_SITES[site_id] = kind == "control"
    return kind == "control"


def anonymous(username: str) -> Actor:
    """Whoever typed `username` (a failed login of an unknown or not yet proven user)."""
    shown = username[:48]  # whatever was typed, cut to fit the audit columns
    return Actor(user_id=f"unknown:{shown}", username=shown, full_name=shown)


def get_user(uow: UnitOfWork, user_id: str) -> User:
    user = uow.session.get(User, user_id)
    if user is None:
        raise NotFound(f"no user {user_id!r}", field="user_id")
    return user


def by_username(uow: UnitOfWork, username: str) -> User | None:
    return uow.session.scalar(select(User).where(User.username == username))


def read_user(uow: UnitOfWork, actor: Actor, user_id: str) -> User:
    """One account, for someone allowed to read accounts of its site (or oneself)."""
    user = get_user(uow, user_id)
    if user.id != actor.user_id:
        authorize(actor, Permission.USERS_READ, site_id=user.home_site_id)
    return user


def managed_user(uow: UnitOfWork, actor: Actor, user_id: str) -> User:
    """An account `actor` may manage (users.manage at the account's home site)."""
    user = get_user(uow, user_id)
    authorize(actor, Permission.USERS_MANAGE, site_id=user.home_site_id)
    return user


def known_roles(roles: Iterable[str]) -> list[str]:
    """The roles, sorted and without repeats; an unknown name is refused."""
    role_list = sorted({str(r) for r in roles})
    known = {r.value for r in Role}
    for role in role_list:
        if role not in known:
            raise ValidationFailed(
                f"unknown role {role!r}; choose from {', '.join(sorted(known))}", field="roles"
            )
    return role_list
