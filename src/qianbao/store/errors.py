"""Database errors as the storage layer sees them, whichever layer raised them.

Hot paths talk to the DBAPI cursor directly, so a failure may arrive as a SQLAlchemy `DBAPIError` (wrapping
the driver's exception) or as the driver's own exception. Callers classify both the same way here.
"""

from __future__ import annotations

import sqlite3

import psycopg
from sqlalchemy.exc import DBAPIError

DATABASE_ERRORS: tuple[type[BaseException], ...] = (DBAPIError, psycopg.Error, sqlite3.Error)

# Serialization failure, deadlock, unique violation: a concurrent transaction won; running again resolves it.
_RETRYABLE_SQLSTATES = frozenset({"40001", "40P01", "23505"})


def driver_error(exc: BaseException) -> BaseException:
    return exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc


def is_retryable(exc: BaseException) -> bool:
    """Would the same transaction, run again, likely succeed (or see the winner's result)?"""
    error = driver_error(exc)
    sqlstate = getattr(error, "sqlstate", None)
    if sqlstate is not None:
        return sqlstate in _RETRYABLE_SQLSTATES
    if isinstance(error, sqlite3.OperationalError):
        message = str(error).lower()
        return "locked" in message or "busy" in message
    if isinstance(error, sqlite3.IntegrityError):
        return "unique constraint failed" in str(error).lower()
    return False
