"""Set-based statements that read the same on PostgreSQL and SQLite: IN lists of any length,
inserts that skip rows already stored."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from webapp.extensions import db

# Ids per IN list: far below SQLite's 32,766 bound variables, and one SendGrid batch fits.
CHUNK = 1000


def insert_statement(model: type) -> sa.Insert:
    """Return an INSERT that understands ON CONFLICT, for the database in use."""
    dialect = db.session.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(model.__table__)


def on_postgres() -> bool:
    """Whether the session talks to PostgreSQL (else SQLite)."""
    return db.session.get_bind().dialect.name == "postgresql"


def chunks(values: Sequence[Any]) -> Iterator[Sequence[Any]]:
    """Split values for IN lists: SQLite bounds a statement's variables (CHUNK at a time);
    PostgreSQL takes one array parameter of any length (all at once: one statement, one lock order)."""
    step = (len(values) or 1) if on_postgres() else CHUNK
    for start in range(0, len(values), step):
        yield values[start : start + step]


def among(column: sa.ColumnElement, values: Iterable[Any]) -> sa.ColumnElement[bool]:
    """`column IN values`; on PostgreSQL one array parameter, so the statement's text (and its
    parse) is the same for 1 value or 1,000."""
    values = list(values)
    if on_postgres():
        array = postgresql.ARRAY(column.type)
        return column == sa.any_(sa.cast(sa.bindparam(None, values, type_=array), array))
    return column.in_(values)


def insert_ignoring_duplicates(model: type, rows: list[dict]) -> int:
    """Insert rows, skipping any whose unique key is already stored; return how many went in."""
    if not rows:
        return 0
    statement = insert_statement(model).on_conflict_do_nothing().returning(model.__table__.c.id)
    return len(db.session.execute(statement, rows).all())
