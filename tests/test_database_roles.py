"""The audit trail stays append-only against the app itself: on PostgreSQL the app connects as a
runtime role that may add audit rows but not UPDATE, DELETE or TRUNCATE them, nor drop or disable
the trigger, nor change the schema; the migrations run as the owner, whose trigger still refuses
edits. (On SQLite there are no roles; the trigger is tested in tests/test_security_audit.py.)"""

from __future__ import annotations

import logging

import pytest
import sqlalchemy as sa

from tests.helpers import ON_POSTGRES, login
from webapp.database import migrate_database, warn_if_app_role_can_rewrite_audit
from webapp.extensions import db
from webapp.models import AuditEntry

# The database engine shapes what this module tests: CI runs it on PostgreSQL and on SQLite.
pytestmark = [
    pytest.mark.engine,
    pytest.mark.skipif(not ON_POSTGRES, reason="database roles are PostgreSQL's"),
]

FORBIDDEN = [
    "DROP TRIGGER audit_entry_append_only ON audit_entry",
    "ALTER TABLE audit_entry DISABLE TRIGGER audit_entry_append_only",
    "DROP FUNCTION audit_entry_append_only() CASCADE",
    "TRUNCATE audit_entry",
    "UPDATE audit_entry SET detail = 'rewritten'",
    "DELETE FROM audit_entry",
    "DROP TABLE audit_entry",
    "ALTER TABLE audit_entry OWNER TO CURRENT_USER",
    "CREATE TABLE shadow (id int)",
    "TRUNCATE email",
    "UPDATE alembic_version SET version_num = '0001'",
]


@pytest.fixture
def owner(migrated_database):
    """A connection as the owner of the tables, the role the migrations run as."""
    engine = sa.create_engine(migrated_database.owner_url, poolclass=sa.pool.NullPool)
    with engine.connect() as connection:
        yield connection
    engine.dispose()


def test_the_app_connects_as_a_role_that_neither_owns_the_trail_nor_is_a_superuser(app, owner):
    role, superuser = db.session.execute(
        sa.text("SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user")
    ).one()
    trail_owner = owner.execute(sa.text("SELECT tableowner FROM pg_tables WHERE tablename = 'audit_entry'"))
    assert superuser is False and role != trail_owner.scalar_one()


@pytest.mark.parametrize("statement", FORBIDDEN)
def test_the_runtime_role_cannot_touch_the_trail_or_the_schema(app, world, statement):
    login(app.test_client(), "owner@a.example")  # the app itself adds to the trail
    before = db.session.execute(sa.select(sa.func.count(AuditEntry.id))).scalar()
    assert before > 0
    with pytest.raises(sa.exc.ProgrammingError, match="permission denied|must be owner"):
        db.session.execute(sa.text(statement))
    db.session.rollback()
    assert db.session.execute(sa.select(sa.func.count(AuditEntry.id))).scalar() == before


def test_the_runtime_role_reads_and_writes_every_other_table(app, world):
    client = app.test_client()
    login(client, "owner@a.example")  # sessions, audit rows
    sent = client.post(f"/clients/{world.client_a.id}/emails", data={"kind": "appointment_reminder"})
    assert sent.status_code == 303  # emails, events, sequences
    assert client.post("/logout").status_code == 302  # updates


def test_the_owner_is_still_refused_by_the_trigger(app, world, owner):
    login(app.test_client(), "owner@a.example")
    for statement in ("UPDATE audit_entry SET detail = 'rewritten'", "DELETE FROM audit_entry"):
        with pytest.raises(sa.exc.DBAPIError, match="append-only"):
            owner.execute(sa.text(statement))
        owner.rollback()


def test_granting_is_idempotent(app, migrated_database):
    app.config["MIGRATION_DATABASE_URL"] = migrated_database.owner_url
    role = sa.engine.make_url(migrated_database.url).username
    assert migrate_database(app) == role
    assert migrate_database(app) == role


def test_production_warns_when_the_app_connects_as_the_owner(app, owner, caplog):
    with caplog.at_level(logging.WARNING, logger="webapp.database"):
        warn_if_app_role_can_rewrite_audit(db.session.connection())
        assert caplog.records == []
        warn_if_app_role_can_rewrite_audit(owner)
    [record] = caplog.records
    assert "MIGRATION_DATABASE_URL" in record.getMessage()
