"""Migration 0009: events stored before reasons were normalised get ours from SendGrid's text."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from flask_migrate import upgrade

from tests.helpers import app_settings
from webapp import create_app

# The database engine shapes what this module tests: CI runs it on PostgreSQL and on SQLite.
pytestmark = pytest.mark.engine


def test_stored_drop_reasons_are_normalised_and_others_stay_empty(tmp_path, redis_url, migrated_database):
    url = f"sqlite:///{tmp_path / 'old.sqlite3'}"
    database = type(migrated_database)(url, url)
    app = create_app(app_settings(tmp_path, database, redis_url))
    with app.app_context():
        directory = app.extensions["migrate"].directory
        upgrade(directory=directory, revision="0008")
        engine = sa.create_engine(url)
        rows = [
            ("dropped", "Spam Reporting Address"),
            ("dropped", " bounced address "),
            ("dropped", "Invalid"),
            ("dropped", "Spam Content"),
            ("bounce", "Bounced Address"),
        ]
        with engine.connect() as connection:
            connection.exec_driver_sql("PRAGMA foreign_keys=OFF")  # events without their emails
            for number, (kind, reason) in enumerate(rows):
                connection.execute(
                    sa.text(
                        "INSERT INTO email_event (email_id, occurred_at, kind, reason, machine, source,"
                        " dedupe_key, created_at) VALUES (1, '2026-01-01', :kind, :reason, 0, 'webhook',"
                        " :key, '2026-01-01')"
                    ),
                    {"kind": kind, "reason": reason, "key": f"k{number}"},
                )
            connection.commit()
        upgrade(directory=directory, revision="0009")
        with engine.connect() as connection:
            found = connection.execute(sa.text("SELECT reject_reason FROM email_event ORDER BY id")).scalars()
            assert list(found) == ["spam_report", "bounced_address", "invalid_address", None, None]
            assert connection.execute(sa.text("SELECT provider_lift_detail FROM removal_request")).all() == []
        engine.dispose()
