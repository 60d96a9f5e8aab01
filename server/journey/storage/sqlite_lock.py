"""One process per SQLite file: an exclusive lock on a file beside it, held while serving."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from sqlalchemy.engine import make_url


class DatabaseInUse(Exception):
    """Another process serves (or migrates) this SQLite file."""


class SqliteLock:
    """An exclusive flock on `<database>.lock`; the kernel drops it when the process ends."""

    def __init__(self, database: Path) -> None:
        self.database = database
        self.path = database.with_name(database.name + ".lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise DatabaseInUse naming the file (and the holder's pid)."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip()
            os.close(fd)
            raise DatabaseInUse(
                f"the SQLite database {self.database} is in use by another journey process"
                f"{f' (pid {holder})' if holder else ''}: SQLite allows one process; "
                "to run several, use PostgreSQL"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        # Only a hint for the message above; the lock itself is what keeps others out.
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    def release(self) -> None:
        """Let another process have the file (closing the descriptor drops the lock)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def lock_for(url: str) -> SqliteLock | None:
    """The lock for an SQLite file URL; None for PostgreSQL and in-memory SQLite."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    name = parsed.database
    if not name or name == ":memory:" or parsed.query.get("mode") == "memory":
        return None
    if name.startswith("file:"):
        name = name.removeprefix("file:").split("?", 1)[0]
    return SqliteLock(Path(name).resolve())
