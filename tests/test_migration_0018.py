"""Migration 0018: the From and To kept with each email's content, added and taken back in place."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from flask_migrate import downgrade

from tests.migration_steps import email_row, migrate_to, scratch_app  # noqa: F401 (a fixture)
from webapp.models import utcnow

# The database engine shapes what this module tests: CI runs it on PostgreSQL and on SQLite.
pytestmark = pytest.mark.engine

HEADERS = {"from_name", "from_address", "to_name"}


def test_0018_adds_the_headers_empty_for_older_copies_and_takes_them_back(scratch_app):  # noqa: F811
    from webapp.extensions import db

    def columns() -> set[str]:
        with db.engine.connect() as connection:
            return {column["name"] for column in sa.inspect(connection).get_columns("email_content")}

    migrate_to(scratch_app, "0017_ingest")
    now = utcnow()
    rows = {
        "clinic": {"name": "C", "created_at": now, "timezone": "UTC"},
        "client": {"clinic_id": 1, "name": "Jo", "email": "jo@x", "phone": "", "created_at": now},
        "email": email_row(1),
        "email_content": {"email_id": 1, "body_html": "<p>Hi</p>", "reply_to": "desk@c.example"},
    }
    with db.engine.begin() as connection:
        for table, values in rows.items():
            names = ", ".join(values)
            marks = ", ".join(f":{name}" for name in values)
            connection.execute(sa.text(f"INSERT INTO {table} ({names}) VALUES ({marks})"), values)
    assert not HEADERS & columns()

    migrate_to(scratch_app)
    assert columns() >= HEADERS
    with db.engine.begin() as connection:
        # An older copy has none: the page rebuilds them and says so.
        kept = connection.execute(sa.text("SELECT from_name, from_address, to_name FROM email_content"))
        assert kept.one() == (None, None, None)
        stored = "from_name = 'C', from_address = 'no-reply@x.example', to_name = 'Jo'"
        connection.execute(sa.text(f"UPDATE email_content SET {stored}"))

    downgrade(directory=scratch_app.extensions["migrate"].directory, revision="0017_ingest")
    assert not HEADERS & columns()
    with db.engine.connect() as connection:
        copy = connection.execute(sa.text("SELECT email_id, body_html, reply_to FROM email_content"))
        assert copy.one() == (1, "<p>Hi</p>", "desk@c.example")
