"""Running the migrations step by step on a database of a test's own, and the rows such tests write."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask
from flask_migrate import upgrade

from tests.helpers import ON_POSTGRES, OWNER_DATABASE_URL, DatabaseUrls, app_settings, psycopg_url
from webapp.models import utcnow


@pytest.fixture
def scratch_app(tmp_path: Path, redis_url: str) -> Iterator[Flask]:
    """The app on an empty database of its own (its owner's connection), for running migrations
    step by step."""
    from webapp import create_app
    from webapp.extensions import db

    if ON_POSTGRES:
        server = sa.engine.make_url(psycopg_url(OWNER_DATABASE_URL))
        name = f"{server.database}_scratch_{os.getpid()}"
        admin = sa.create_engine(server, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
        url = server.set(database=name).render_as_string(hide_password=False)
    else:
        url = f"sqlite:///{tmp_path / 'scratch.sqlite3'}"
    app = create_app(app_settings(tmp_path, DatabaseUrls(url, url), redis_url))
    with app.app_context():
        yield app
        db.session.remove()
        db.engine.dispose()
    if ON_POSTGRES:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def migrate_to(app: Flask, revision: str = "head") -> None:
    upgrade(directory=app.extensions["migrate"].directory, revision=revision)


def email_row(number: int, resend_of_id: int | None = None) -> dict:
    """An `email` row of clinic 1's client 1 as a migration test inserts it (a resend when
    `resend_of_id` is given)."""
    now = utcnow()
    return {
        "clinic_id": 1,
        "client_id": 1,
        "app_message_id": f"a-{number}",
        "to_address": "jo@x",
        "subject": "S",
        "body": "B",
        "kind": "receipt",
        "status": "failed" if resend_of_id is None else "sending",
        "version": 0,
        "provider": "sandbox",
        "send_state": "accepted",
        "send_attempts": 1,
        "status_changed_at": now,
        "created_at": now,
        "resends_unfound": 0,
        "resend_of_id": resend_of_id,
    }
