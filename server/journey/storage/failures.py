"""Storage failures (database down, locked, full) become UNAVAILABLE: retryable, never INTERNAL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from journey.domain.errors import Unavailable

# DBAPIError covers what the drivers report (refused, reset, locked, disk full); OSError and
# TimeoutError what can escape a connect; PoolTimeout every connection being busy or stuck.
FAILURES: tuple[type[BaseException], ...] = (DBAPIError, OSError, TimeoutError, PoolTimeout)


def is_outage(error: BaseException) -> bool:
    """Whether the database itself failed (down, locked, full), not one statement's data.

    OperationalError is SQLAlchemy's class for what the application does not control:
    disconnects, locks, a full disk. Integrity or data errors are about one call's rows.
    """
    if isinstance(error, DBAPIError):
        return error.connection_invalidated or isinstance(error, OperationalError | InterfaceError)
    return isinstance(error, FAILURES)


def unavailable(error: BaseException) -> Unavailable:
    """The UNAVAILABLE a caller sees for a storage failure; names only the error's type."""
    # The driver's message may quote SQL or parameters: it goes to the log, not to callers.
    return Unavailable(f"storage is unavailable ({type(error).__name__}); retry later")


@contextmanager
def as_unavailable() -> Iterator[None]:
    """Turn a storage failure inside the block into Unavailable."""
    try:
        yield
    except FAILURES as error:
        raise unavailable(error) from error
