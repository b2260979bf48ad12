"""Database roles on PostgreSQL: the migrations run as the role that owns the tables; the app
connects as a runtime role that may read and write rows but not change the schema, and may only
add to the audit trail (not drop its trigger, TRUNCATE it, or UPDATE or DELETE its rows).

Also: ending a session when the database went away under it (a fast shutdown), without raising.
"""

from __future__ import annotations

import contextlib
import logging

import sqlalchemy as sa
from flask import Flask
from flask_migrate import upgrade
from sqlalchemy.exc import SQLAlchemyError

from webapp.extensions import db

log = logging.getLogger(__name__)

# What the runtime role may not do to some tables, beyond what it may not do to any (no TRUNCATE,
# no DDL): the audit trail only grows, the migrations' bookkeeping is the owner's.
WITHHELD = {"audit_entry": "UPDATE, DELETE", "alembic_version": "INSERT, UPDATE, DELETE"}


def migrate_database(app: Flask) -> str | None:
    """Run the migrations as the owner, then grant the runtime role its rights; return that role.

    None when there is no separate runtime role (SQLite, or one URL for both).
    """
    upgrade(directory=app.extensions["migrate"].directory)
    owner = sa.engine.make_url(app.config["MIGRATION_DATABASE_URL"])
    runtime = sa.engine.make_url(app.config["DATABASE_URL"])
    if owner.get_backend_name() != "postgresql" or not runtime.username or runtime.username == owner.username:
        return None
    engine = sa.create_engine(owner, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as connection:
            grant_runtime_rights(connection, runtime.username)
    finally:
        engine.dispose()
    return runtime.username


def grant_runtime_rights(connection: sa.Connection, role: str) -> None:
    """Grant the role row access to every table, and no more than SELECT and INSERT on the audit trail.

    Idempotent: run after every migration, so new tables get their grants too. Owning no table,
    the role can alter, drop or disable the trigger of none; without TRUNCATE it cannot empty one.
    """
    quote = connection.dialect.identifier_preparer.quote
    name = quote(role)
    database = connection.execute(sa.text("SELECT current_database()")).scalar_one()
    statements = [
        f"GRANT CONNECT ON DATABASE {quote(database)} TO {name}",
        f"GRANT USAGE ON SCHEMA public TO {name}",
        f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {name}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {name}",
        f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {name}",
    ]
    statements += [f"REVOKE {rights} ON {quote(table)} FROM {name}" for table, rights in WITHHELD.items()]
    for statement in statements:
        connection.execute(sa.text(statement))


def warn_if_app_role_can_rewrite_audit(connection: sa.Connection) -> None:
    """Warn when the app's own role owns the audit trail or is a superuser: it could rewrite it."""
    if connection.dialect.name != "postgresql":
        return
    owner_or_super = connection.execute(
        sa.text(
            "SELECT rolsuper OR EXISTS (SELECT 1 FROM pg_tables WHERE tablename = 'audit_entry' "
            "AND schemaname = current_schema() AND tableowner = current_user) "
            "FROM pg_roles WHERE rolname = current_user"
        )
    ).scalar()
    if owner_or_super:
        log.warning(
            "the app connects to PostgreSQL as a role that owns the audit trail or is a superuser, "
            "so it could drop its trigger or empty it; connect as a runtime role and migrate with "
            "MIGRATION_DATABASE_URL (docs/operations.md, Database roles)"
        )


def rollback_quietly() -> None:
    """Roll the session back; if the connection died with the server, drop it instead of raising.

    In a fast shutdown PostgreSQL ends every connection: the ROLLBACK itself then fails, and an
    error from it would turn the 503 a caller promised into a 500.
    """
    try:
        db.session.rollback()
    except SQLAlchemyError as error:
        log.warning("the database connection was lost while rolling back: %s", error)
        _drop_session()


def end_sessions_quietly(app: Flask) -> None:
    """End each request's (and job's) session without raising when its connection died with the
    server: registered after Flask-SQLAlchemy, this runs before its own teardown."""

    @app.teardown_appcontext
    def _end_session(_error: BaseException | None) -> None:
        try:
            db.session.remove()
        except SQLAlchemyError as error:
            log.warning("the database connection was lost at the end of a request: %s", error)
            _drop_session()


def _drop_session() -> None:
    """Close the session by invalidating its connections (no ROLLBACK sent), and forget it."""
    with contextlib.suppress(SQLAlchemyError):
        db.session.invalidate()
    db.session.registry.clear()
