"""A changed email log's render waits on PostgreSQL as few times as it can: its view only reads, so
it runs without BEGIN and ROLLBACK, and a pooled connection is checked (SELECT 1) only after it sat
idle; one the server dropped meanwhile is replaced unseen."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from tests.helpers import ON_POSTGRES, htmx_get, login
from webapp import database
from webapp.extensions import db

pytestmark = [
    pytest.mark.engine,
    pytest.mark.skipif(not ON_POSTGRES, reason="autocommit and pings are PostgreSQL's here"),
]


def autocommit_of_each_statement(engine: sa.Engine, request) -> list[bool]:
    """Run `request` and return, for each SQL statement it ran, whether its connection autocommitted."""
    seen: list[bool] = []

    def on_sql(conn, cursor, statement, parameters, context, executemany) -> None:
        seen.append(conn.connection.dbapi_connection.autocommit)

    sa.event.listen(engine, "before_cursor_execute", on_sql)
    try:
        request()
    finally:
        sa.event.remove(engine, "before_cursor_execute", on_sql)
    return seen


def test_the_log_reads_without_a_transaction_and_other_views_keep_theirs(make_app, world):
    app = make_app()  # not the test's app: each request in its own app context, as in production
    client = app.test_client()
    login(client, "clinician@a.example")
    log_url = f"/clients/{world.client_a.id}/emails"
    with app.app_context():
        engine = db.engine

    in_log = autocommit_of_each_statement(engine, lambda: htmx_get(client, log_url))
    # The same pooled connection serves the next request in its usual, transactional mode.
    on_page = autocommit_of_each_statement(engine, lambda: client.get(f"/clients/{world.client_a.id}"))
    assert in_log and all(in_log)
    assert on_page and not any(on_page)
    with engine.connect() as connection:
        assert connection.connection.dbapi_connection.autocommit is False


def test_a_connection_in_steady_use_is_not_pinged(make_app, world, monkeypatch):
    app = make_app()
    client = app.test_client()
    login(client, "clinician@a.example")
    with app.app_context():
        pings: list[object] = []
        real_ping = db.engine.dialect.do_ping
        monkeypatch.setattr(db.engine.dialect, "do_ping", lambda conn: pings.append(conn) or real_ping(conn))
        for _ in range(3):
            assert htmx_get(client, f"/clients/{world.client_a.id}/emails").status_code == 200
        assert pings == []
        monkeypatch.setattr(database, "PING_AFTER_IDLE_SECONDS", -1.0)  # every connection sat idle
        assert htmx_get(client, f"/clients/{world.client_a.id}/emails").status_code == 200
        assert len(pings) == 1


def test_an_idle_connection_the_server_dropped_is_replaced_unseen(make_app, world, monkeypatch):
    """As after a PostgreSQL restart while the app was quiet: the request gets a new connection."""
    app = make_app()
    client = app.test_client()
    login(client, "clinician@a.example")
    log_url = f"/clients/{world.client_a.id}/emails"
    with app.app_context():
        assert htmx_get(client, log_url).status_code == 200
        with db.engine.connect() as connection:  # the pooled connection the log just used
            pid = connection.exec_driver_sql("SELECT pg_backend_pid()").scalar()
            connection.rollback()
        owner = sa.create_engine(database_owner_url(app), poolclass=sa.pool.NullPool)
        with owner.connect() as other:
            assert other.exec_driver_sql(f"SELECT pg_terminate_backend({int(pid)})").scalar()
        owner.dispose()
        monkeypatch.setattr(database, "PING_AFTER_IDLE_SECONDS", -1.0)
        assert htmx_get(client, log_url).status_code == 200
        with db.engine.connect() as connection:
            assert connection.exec_driver_sql("SELECT pg_backend_pid()").scalar() != pid


def database_owner_url(app) -> str:
    """The migrations' role may end the app's connections (pg_terminate_backend)."""
    return app.config["MIGRATION_DATABASE_URL"]
