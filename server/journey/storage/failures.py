"""Storage failures (database down, locked, full) become UNAVAILABLE: retryable, never INTERNAL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from journey.domain.errors import Unavailable

# DBAPIError covers what the drivers report (refused, reset, locked, disk full); OSError and
# TimeoutError what can escape a connect; PoolTimeout every connection being busy or stuck.
FAILURES: tuple[type[BaseException], ...] = (DBAPIError, OSError, TimeoutError, PoolTimeout)
# Told of each storage failure (for metrics), with its kind: see failure_kind.
OnFailure = Callable[[str], None]
# PostgreSQL SQLSTATEs: lock_not_available, deadlock_detected; disk_full, out_of_memory.
_PG_LOCKED = ("55P03", "40P01")
_PG_FULL = ("53100", "53200")


def is_outage(error: BaseException) -> bool:
    """Whether the database itself failed (down, locked, full), not one statement's data.

    OperationalError is SQLAlchemy's class for what the application does not control:
    disconnects, locks, a full disk. Integrity or data errors are about one call's rows.
    """
    if isinstance(error, DBAPIError):
        return error.connection_invalidated or isinstance(error, OperationalError | InterfaceError)
    return isinstance(error, FAILURES)


def failure_kind(error: BaseException) -> str:
    """A storage failure's kind: unavailable, locked, full, integrity or other.

    A short fixed list, so that a metric labelled with it stays small whatever the drivers say.
    """
    if isinstance(error, IntegrityError):
        return "integrity"
    if isinstance(error, DBAPIError):
        original = error.orig
        # sqlite3 names its result code (SQLITE_BUSY, SQLITE_FULL, ...); asyncpg the SQLSTATE.
        sqlite_name = str(getattr(original, "sqlite_errorname", ""))
        sqlstate = str(getattr(original, "sqlstate", "") or getattr(original, "pgcode", "") or "")
        if sqlite_name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or sqlstate in _PG_LOCKED:
            return "locked"
        if sqlite_name.startswith("SQLITE_FULL") or sqlstate in _PG_FULL:
            return "full"
    return "unavailable" if is_outage(error) else "other"


def unavailable(error: BaseException) -> Unavailable:
    """The UNAVAILABLE a caller sees for a storage failure; names only the error's type."""
    # The driver's message may quote SQL or parameters: it goes to the log, not to callers.
    return Unavailable(f"storage is unavailable ({type(error).__name__}); retry later")


@contextmanager
def observed(on_failure: OnFailure | None) -> Iterator[None]:
    """Tell `on_failure` (if any) the kind of a storage failure inside the block; re-raise it."""
    try:
        yield
    except FAILURES as error:
        if on_failure is not None:
            on_failure(failure_kind(error))
        raise


@contextmanager
def as_unavailable(on_failure: OnFailure | None = None) -> Iterator[None]:
    """Turn a storage failure inside the block into Unavailable (telling `on_failure` first)."""
    try:
        yield
    except FAILURES as error:
        if on_failure is not None:
            on_failure(failure_kind(error))
        raise unavailable(error) from error
