"""Unit of work: one use case = one transaction, audit rows included; events go out after commit."""

from __future__ import annotations

from types import TracebackType
from typing import Any

from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.exc import StaleDataError

from nearfab.bus import EventBus
from nearfab.common.clock import Clock
from nearfab.common.errors import Conflict


def _conflict() -> Conflict:
    return Conflict(
        "someone else changed this record at the same moment; nothing was saved, look again "
        "and retry",
        code="concurrent_change",
    )


def _lost_race(exc: BaseException) -> bool:
    """An optimistic-lock miss, or a unique key taken by a concurrent transaction."""
    if isinstance(exc, StaleDataError):
        return True
    if isinstance(exc, IntegrityError):
        code = getattr(exc.orig, "sqlstate", None)
        if code is not None:
            return bool(code == "23505")  # unique_violation
        return "unique constraint failed" in str(exc.orig).lower()
    if isinstance(exc, OperationalError):
        code = getattr(exc.orig, "sqlstate", None)
        if code is not None:
            return code in ("40001", "40P01")  # serialization failure, deadlock
        return "database is locked" in str(exc.orig).lower()
    return False


class UnitOfWork:
    def __init__(self, session_factory: sessionmaker[Any], clock: Clock, bus: EventBus) -> None:
        self._session_factory = session_factory
        self.clock = clock
        self.bus = bus
        self._events: list[Any] = []
        self._committed = False

    def __enter__(self) -> UnitOfWork:
        self.session: Session = self._session_factory()
        self._events = []
        self._committed = False
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if not self._committed:
                if exc_type is None:
                    # a read-only use: keep what was loaded readable after the session closes
                    self.session.expunge_all()
                self.session.rollback()
        finally:
            self.session.close()
        if exc is not None and _lost_race(exc):
            raise _conflict() from exc
        if exc_type is None and self._committed:
            events, self._events = self._events, []
            for event in events:
                self.bus.publish(event)

    def emit(self, event: Any) -> None:
        """Queue a domain event, published only if this transaction commits."""
        self._events.append(event)

    def commit(self) -> None:
        if self._committed:
            raise RuntimeError("a unit of work commits once")
        self.session.commit()
        self._committed = True

    def flush(self) -> None:
        """Write pending changes now; a lost race surfaces here as a Conflict the use case can
        still handle (e.g. audit the failed attempt)."""
        try:
            self.session.flush()
        except Exception as exc:
            if _lost_race(exc):
                raise _conflict() from exc
            raise

    @staticmethod
    def as_conflict(exc: BaseException) -> Conflict | None:
        """The Conflict a database error means, if it is a lost race (else None)."""
        return _conflict() if _lost_race(exc) else None
