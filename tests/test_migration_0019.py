"""Migration 0019: an email's resends found by a partial index that holds only resends."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from flask_migrate import downgrade

from tests.helpers import ON_POSTGRES
from tests.migration_steps import email_row, migrate_to, scratch_app  # noqa: F401 (a fixture)
from webapp.models import utcnow

# The database engine shapes what this module tests: CI runs it on PostgreSQL and on SQLite.
pytestmark = pytest.mark.engine

LOOKUP = "SELECT id FROM email WHERE resend_of_id IN (1, 5)"


def test_0019_indexes_only_the_resends_and_their_lookups_use_it(scratch_app):  # noqa: F811
    from webapp.extensions import db

    def index_rows() -> int | None:
        """The index's entries (None: no such index)."""
        with db.engine.connect() as connection:
            if ON_POSTGRES:  # counted by CREATE INDEX
                query = "SELECT reltuples FROM pg_class WHERE relname = 'ix_email_resend_of_id'"
                return connection.execute(sa.text(query)).scalar()
            query = "SELECT count(*) FROM sqlite_master WHERE name = 'ix_email_resend_of_id'"
            if not connection.execute(sa.text(query)).scalar():
                return None
            # SQLite reads a partial index only for a query whose WHERE implies its predicate.
            query = "SELECT count(*) FROM email INDEXED BY ix_email_resend_of_id WHERE resend_of_id > 0"
            return connection.execute(sa.text(query)).scalar()

    def plan() -> str:
        with db.engine.begin() as connection:
            if ON_POSTGRES:
                # Four rows: the planner would read the table; the question is whether it can use the index.
                connection.execute(sa.text("SET LOCAL enable_seqscan = off"))
                return "\n".join(connection.execute(sa.text(f"EXPLAIN {LOOKUP}")).scalars())
            return "\n".join(
                str(row[-1]) for row in connection.execute(sa.text(f"EXPLAIN QUERY PLAN {LOOKUP}"))
            )

    migrate_to(scratch_app, "0018_as_sent_headers")
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
        # Three failed emails, the first resent twice.
        for number, resend_of_id in enumerate((None, None, None, 1, 1), start=1):
            values = email_row(number, resend_of_id)
            names = ", ".join(values)
            marks = ", ".join(f":{name}" for name in values)
            connection.execute(sa.text(f"INSERT INTO email ({names}) VALUES ({marks})"), values)
    assert index_rows() is None

    migrate_to(scratch_app)
    assert index_rows() == 2  # the two resends; the emails resent nothing are not in it
    assert "ix_email_resend_of_id" in plan()
    with db.engine.connect() as connection:
        assert sorted(connection.execute(sa.text(LOOKUP)).scalars()) == [4, 5]

    downgrade(directory=scratch_app.extensions["migrate"].directory, revision="0018_as_sent_headers")
    assert index_rows() is None
    with db.engine.connect() as connection:
        assert connection.execute(sa.text("SELECT count(*) FROM email")).scalar() == 5
