"""Database handle: the declarative base and the Flask-SQLAlchemy extension object."""

from __future__ import annotations

from typing import Any

from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    """Base class of every ORM row (subclassing it type-checks where ``db.Model`` does not)."""


db = SQLAlchemy(model_class=Base)


@event.listens_for(Engine, "connect")
def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
    """Use WAL, enforce foreign keys and overwrite deleted content on SQLite connections."""
    module = type(dbapi_connection).__module__
    if not module.startswith("sqlite3"):
        return
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA secure_delete=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.execute("PRAGMA journal_size_limit=0")
    cursor.close()


def forget_deleted_rows() -> None:
    """After deleting sensitive rows, make sure no old copy survives in SQLite's WAL file.

    ``secure_delete`` zeroes freed pages in the main file, but the write-ahead log keeps the
    previous page images until a checkpoint; a TRUNCATE checkpoint copies them back (zeroed) and
    empties the WAL. PostgreSQL keeps old row versions until VACUUM and WAL until recycled: see
    ``docs/deployment.md``.
    """
    if db.engine.dialect.name != "sqlite":
        return
    with db.engine.connect() as connection:
        connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
