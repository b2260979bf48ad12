"""Migration 0020: spam-list entries and alerts found by their email through partial indexes."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from flask_migrate import downgrade

from tests.helpers import ON_POSTGRES
from tests.migration_steps import email_row, migrate_to, scratch_app  # noqa: F401 (a fixture)
from webapp.models import utcnow

# The database engine shapes what this module tests: CI runs it on PostgreSQL and on SQLite.
pytestmark = pytest.mark.engine

TABLES = ("spam_list_entry", "operator_alert")
# What PostgreSQL's foreign-key check asks when an email is deleted, and an email's alerts.
LOOKUP = "SELECT id FROM {table} WHERE email_id = 2"


def _index_rows(table: str) -> int | None:
    """The table's email index's entries (None: no such index)."""
    from webapp.extensions import db

    name = f"ix_{table}_email_id"
    with db.engine.connect() as connection:
        if ON_POSTGRES:  # counted by CREATE INDEX
            query = f"SELECT reltuples FROM pg_class WHERE relname = '{name}'"
            return connection.execute(sa.text(query)).scalar()
        query = f"SELECT count(*) FROM sqlite_master WHERE name = '{name}'"
        if not connection.execute(sa.text(query)).scalar():
            return None
        # SQLite reads a partial index only for a query whose WHERE implies its predicate.
        query = f"SELECT count(*) FROM {table} INDEXED BY {name} WHERE email_id > 0"
        return connection.execute(sa.text(query)).scalar()


def _plan(table: str) -> str:
    from webapp.extensions import db

    lookup = LOOKUP.format(table=table)
    with db.engine.begin() as connection:
        if ON_POSTGRES:
            # A few rows: the planner would read the table; the question is whether it can use the index.
            connection.execute(sa.text("SET LOCAL enable_seqscan = off"))
            return "\n".join(connection.execute(sa.text(f"EXPLAIN {lookup}")).scalars())
        return "\n".join(str(row[-1]) for row in connection.execute(sa.text(f"EXPLAIN QUERY PLAN {lookup}")))


def test_0020_indexes_only_the_rows_naming_an_email_and_their_lookups_use_it(scratch_app):  # noqa: F811
    from webapp.extensions import db

    migrate_to(scratch_app, "0019_resend_index")
    now = utcnow()
    with db.engine.begin() as connection:
        connection.execute(
            sa.text("INSERT INTO clinic (name, created_at, timezone) VALUES ('C', :now, 'UTC')"), {"now": now}
        )
        connection.execute(
            sa.text(
                "INSERT INTO client (clinic_id, name, email, phone, created_at)"
                " VALUES (1, 'Jo', 'jo@x', '', :now)"
            ),
            {"now": now},
        )
        for number in (1, 2, 3):
            values = email_row(number)
            names = ", ".join(values)
            marks = ", ".join(f":{name}" for name in values)
            connection.execute(sa.text(f"INSERT INTO email ({names}) VALUES ({marks})"), values)
        # Two entries reported by an email's events, two from the provider's list (no email).
        for address, email_id in (("a@x", 1), ("b@x", 2), ("c@x", None), ("d@x", None)):
            connection.execute(
                sa.text(
                    "INSERT INTO spam_list_entry (address, reported_at, email_id, source)"
                    " VALUES (:address, :now, :email_id, :source)"
                ),
                {
                    "address": address,
                    "now": now,
                    "email_id": email_id,
                    "source": "sync" if email_id is None else "webhook",
                },
            )
        # Three alerts about emails (two about the second), one about the provider.
        for email_id in (2, 2, 3, None):
            connection.execute(
                sa.text(
                    "INSERT INTO operator_alert (kind, message, email_id, created_at)"
                    " VALUES ('stuck', 'M', :email_id, :now)"
                ),
                {"email_id": email_id, "now": now},
            )
    assert [_index_rows(table) for table in TABLES] == [None, None]

    migrate_to(scratch_app)
    # Only the rows naming an email are in them.
    assert [_index_rows(table) for table in TABLES] == [2, 3]
    for table in TABLES:
        assert f"ix_{table}_email_id" in _plan(table)
    with db.engine.connect() as connection:
        assert list(connection.execute(sa.text(LOOKUP.format(table="spam_list_entry"))).scalars()) == [2]
        assert sorted(connection.execute(sa.text(LOOKUP.format(table="operator_alert"))).scalars()) == [1, 2]

    downgrade(directory=scratch_app.extensions["migrate"].directory, revision="0019_resend_index")
    assert [_index_rows(table) for table in TABLES] == [None, None]
    with db.engine.connect() as connection:
        assert [
            connection.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar() for table in TABLES
        ] == [4, 4]
