"""The migrations: what they do to stored rows, on the database the run uses (PostgreSQL or SQLite)."""

from __future__ import annotations

import warnings

import pytest
import sqlalchemy as sa

from tests.helpers import ON_POSTGRES
from tests.migration_steps import migrate_to, scratch_app  # noqa: F401 (a fixture)
from webapp.models import JSONType, UTCDateTime, utcnow

# The database engine shapes what this module tests: CI runs it on PostgreSQL and on SQLite.
pytestmark = pytest.mark.engine


def test_kept_events_without_our_id_learn_their_send_request_on_upgrade(scratch_app):  # noqa: F811
    from webapp.extensions import db

    migrate_to(scratch_app, "0007")
    pending = sa.table(
        "pending_event",
        sa.column("app_message_id", sa.String),
        sa.column("dedupe_key", sa.String),
        sa.column("payload", JSONType),
        sa.column("received_at", UTCDateTime),
    )
    kept = {
        "current": ("", "XOLD.filter0425p1mdw1.13037.57168B4A1D.0"),
        "older": ("", "filter0093p1las1.9128.5717FB8127.0"),  # a host name: it names no request
        "ours": ("app-1", "XAPP.filter0425p1mdw1.0"),  # found by our id anyway
        "none": ("", None),
    }
    with db.engine.begin() as connection:
        connection.execute(
            pending.insert(),
            [
                {
                    "app_message_id": app_id,
                    "dedupe_key": key,
                    "payload": {"kind": "delivered", "provider_message_id": provider_id},
                    "received_at": utcnow(),
                }
                for key, (app_id, provider_id) in kept.items()
            ],
        )
    migrate_to(scratch_app)
    with db.engine.connect() as connection:
        learnt = dict(
            connection.execute(sa.text("SELECT dedupe_key, provider_message_id FROM pending_event")).all()
        )
    assert learnt == {"current": "XOLD", "older": None, "ours": None, "none": None}


def test_send_states_take_words_apart_from_the_statuses_and_back(scratch_app):  # noqa: F811
    from flask_migrate import downgrade

    from webapp.extensions import db

    migrate_to(scratch_app, "0007")
    now = utcnow()
    with db.engine.begin() as connection:
        connection.execute(
            sa.table(
                "clinic", sa.column("id"), sa.column("name"), sa.column("created_at", UTCDateTime)
            ).insert(),
            {"id": 1, "name": "C", "created_at": now},
        )
        connection.execute(
            sa.table(
                "client",
                *(sa.column(name) for name in ("id", "clinic_id", "name", "email", "phone")),
                sa.column("created_at", UTCDateTime),
            ).insert(),
            {"id": 1, "clinic_id": 1, "name": "N", "email": "n@example.com", "phone": "", "created_at": now},
        )
        names = ("id", "clinic_id", "client_id", "app_message_id", "to_address", "subject", "body", "kind")
        names += ("status", "version", "provider", "send_state", "send_attempts")
        email = sa.table(
            "email",
            *(sa.column(name) for name in names),
            sa.column("status_changed_at", UTCDateTime),
            sa.column("created_at", UTCDateTime),
        )
        old_states = ["queued", "sending", "accepted", "failed", "in_doubt"]
        connection.execute(
            email.insert(),
            [
                {
                    "id": number,
                    "clinic_id": 1,
                    "client_id": 1,
                    "app_message_id": f"m{number}",
                    "to_address": "n@example.com",
                    "subject": "S",
                    "body": "B",
                    "kind": "receipt",
                    # The status words stay: only send states move.
                    "status": "failed" if state == "failed" else "sending",
                    "version": 0,
                    "provider": "sendgrid",
                    "send_state": state,
                    "send_attempts": 1,
                    "status_changed_at": now,
                    "created_at": now,
                }
                for number, state in enumerate(old_states, start=1)
            ],
        )

    def states() -> list[tuple[str, str]]:
        with db.engine.connect() as connection:
            return [
                tuple(row)
                for row in connection.execute(sa.text("SELECT send_state, status FROM email ORDER BY id"))
            ]

    migrate_to(scratch_app)
    assert states() == [
        ("queued", "sending"),
        ("claimed", "sending"),
        ("accepted", "sending"),
        ("refused", "failed"),
        ("in_doubt", "sending"),
    ]
    downgrade(directory=scratch_app.extensions["migrate"].directory, revision="0007")
    assert [state for state, _ in states()] == old_states


def test_the_models_and_the_migrations_describe_the_same_schema(migrated_database, make_app):
    """Autogenerate compares the models with a database the migrations made: a model changed
    without a migration (or a migration without its model) shows here, not in production."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from webapp.extensions import db

    engine = sa.create_engine(migrated_database.owner_url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection, warnings.catch_warnings():
            # SQLite cannot reflect an index on an expression (lower(to_address)), so alembic
            # leaves it out of the comparison there and says so; PostgreSQL compares it.
            warnings.filterwarnings("ignore", "Skipped unsupported reflection of expression-based index")
            warnings.filterwarnings(
                "ignore", "autogenerate skipping metadata-specified expression-based index"
            )
            context = MigrationContext.configure(
                connection,
                opts={"compare_type": True, "compare_server_default": False},
            )
            differences = compare_metadata(context, db.metadata)
    finally:
        engine.dispose()
    assert differences == []


def test_stored_event_keys_narrow_on_upgrade_and_the_same_events_are_still_recognised(scratch_app):  # noqa: F811
    from webapp.extensions import db
    from webapp.models import Email
    from webapp.providers.base import ProviderEvent
    from webapp.services import events as event_service

    migrate_to(scratch_app, "0011")
    now = utcnow().replace(microsecond=0)
    with db.engine.begin() as connection:
        connection.execute(
            sa.text("INSERT INTO clinic (id, name, created_at) VALUES (1, 'C', :now)"), {"now": now}
        )
        connection.execute(
            sa.text(
                "INSERT INTO client (id, clinic_id, name, email, phone, created_at)"
                " VALUES (1, 1, 'N', 'n@example.com', '', :now)"
            ),
            {"now": now},
        )
        connection.execute(
            sa.text(
                "INSERT INTO email (id, clinic_id, client_id, app_message_id, to_address, subject, body,"
                " kind, status, version, provider, send_state, send_attempts, status_changed_at, created_at)"
                " VALUES (1, 1, 1, 'm1', 'n@example.com', 'S', 'B', 'receipt', 'delivered', 0, 'sendgrid',"
                " 'accepted', 1, :now, :now)"
            ),
            {"now": now},
        )
    stored = [
        ProviderEvent("processed", now, app_message_id="m1"),
        ProviderEvent("delivered", now, app_message_id="m1"),
        ProviderEvent("click", now, app_message_id="m1", url="https://example.com/a"),
    ]
    event = sa.table(
        "email_event",
        *(sa.column(name) for name in ("email_id", "kind", "machine", "source", "dedupe_key")),
        sa.column("occurred_at", UTCDateTime),
        sa.column("created_at", UTCDateTime),
    )
    with db.engine.begin() as connection:
        connection.execute(
            event.insert(),
            [
                {
                    "email_id": 1,
                    "kind": item.kind,
                    "machine": False,
                    "source": "webhook",
                    "dedupe_key": item.dedupe_key,  # 64 hex characters, as every key was
                    "occurred_at": now,
                    "created_at": now,
                }
                for item in stored
            ],
        )
    migrate_to(scratch_app)

    keys = sorted(db.session.execute(sa.text("SELECT dedupe_key FROM email_event")).scalars())
    assert [bytes(key) for key in keys] == sorted(bytes.fromhex(item.dedupe_key[:32]) for item in stored)
    # The same events again (a webhook retry, a poll) are recognised; a new one is stored.
    email = db.session.get(Email, 1)
    assert event_service.apply_events(email, stored, source="poll") is False
    opened = ProviderEvent("open", now, app_message_id="m1")
    assert event_service.apply_events(email, [*stored, opened], source="webhook") is True
    db.session.commit()
    assert db.session.execute(sa.text("SELECT count(*) FROM email_event")).scalar() == 4


@pytest.mark.skipif(not ON_POSTGRES, reason="SQLite does not compress")
def test_webhook_bodies_are_compressed_with_lz4_from_0013_and_back(scratch_app):  # noqa: F811
    from flask_migrate import downgrade

    from webapp.extensions import db

    def compression() -> str:
        with db.engine.connect() as connection:
            return connection.execute(
                sa.text(
                    "SELECT attcompression FROM pg_attribute"
                    " WHERE attrelid = 'webhook_batch'::regclass AND attname = 'body'"
                )
            ).scalar()

    migrate_to(scratch_app, "0012")
    assert compression() == ""  # the server's default, pglz
    migrate_to(scratch_app)
    assert compression() == "l"
    downgrade(directory=scratch_app.extensions["migrate"].directory, revision="0012")
    assert compression() == ""


def test_open_alerts_are_grouped_into_incidents_from_0014_and_held_sends_go_back_in_doubt(scratch_app):  # noqa: F811
    from flask_migrate import downgrade

    from webapp.extensions import db

    migrate_to(scratch_app, "0013")
    now = utcnow()
    rows = {
        "clinic": [{"id": 1, "name": "A"}, {"id": 2, "name": "B"}],
        "client": [
            {"id": 1, "clinic_id": 1, "name": "N", "email": "n@example.com", "phone": ""},
            {"id": 2, "clinic_id": 2, "name": "M", "email": "m@example.com", "phone": ""},
        ],
        "email": [
            {
                "id": n,
                "clinic_id": clinic,
                "client_id": clinic,
                "app_message_id": f"m{n}",
                "to_address": "x@y.z",
            }
            | {"subject": "S", "body": "B", "kind": "receipt", "status": "sending", "version": 0}
            | {"provider": "postmark", "send_state": "in_doubt", "send_attempts": 1}
            for n, clinic in ((1, 1), (2, 1), (3, 2))
        ],
        "operator_alert": [
            {"id": 1, "kind": "email_stuck", "message": "s1", "email_id": 1, "resolved_at": None},
            {"id": 2, "kind": "email_stuck", "message": "s2", "email_id": 2, "resolved_at": None},
            {"id": 3, "kind": "email_stuck", "message": "s3", "email_id": 3, "resolved_at": None},
            {"id": 4, "kind": "email_in_doubt", "message": "d1", "email_id": 1, "resolved_at": None},
            {"id": 5, "kind": "email_in_doubt", "message": "d3", "email_id": 3, "resolved_at": None},
            {"id": 6, "kind": "provider_auth", "message": "key", "email_id": None, "resolved_at": None},
            {"id": 7, "kind": "email_stuck", "message": "old", "email_id": 3, "resolved_at": now},
        ],
    }
    with db.engine.begin() as connection:
        for table, values in rows.items():
            columns = [sa.column(name) for name in values[0]]
            stamps = [sa.column(name, UTCDateTime) for name in ("created_at", "status_changed_at")]
            if table != "email":
                stamps = stamps[:1]
            connection.execute(
                sa.table(table, *columns, *stamps).insert(),
                [{**value, **{stamp.name: now for stamp in stamps}} for value in values],
            )

    def grouped() -> list[tuple]:
        with db.engine.connect() as connection:
            return [
                tuple(row)
                for row in connection.execute(
                    sa.text(
                        "SELECT i.kind, i.scope, i.clinic_id, count(a.id) FROM incident i"
                        " JOIN operator_alert a ON a.incident_id = i.id WHERE i.closed_at IS NULL"
                        " GROUP BY i.kind, i.scope, i.clinic_id ORDER BY i.kind, i.scope"
                    )
                )
            ]

    migrate_to(scratch_app)
    assert grouped() == [
        ("email_in_doubt", "provider:postmark", None, 2),  # the provider's cause: one for both clinics
        ("email_stuck", "clinic:1", 1, 2),
        ("email_stuck", "clinic:2", 2, 1),
        ("provider_auth", "provider:sandbox", None, 1),  # no email: the configured provider, as the app
    ]
    with db.engine.begin() as connection:
        connection.execute(sa.text("UPDATE email SET send_state = 'held', resends_unfound = 1 WHERE id = 2"))
    downgrade(directory=scratch_app.extensions["migrate"].directory, revision="0013")
    with db.engine.connect() as connection:
        states = connection.execute(sa.text("SELECT send_state FROM email ORDER BY id")).scalars().all()
        columns = {column["name"] for column in sa.inspect(connection).get_columns("operator_alert")}
    assert states == ["in_doubt"] * 3 and "incident_id" not in columns


def test_0014_adds_our_receipt_time_and_set_aside_events_and_takes_them_back(scratch_app):  # noqa: F811
    """Added and dropped in place, on both databases: the email table keeps its rows and its
    expression index (a SQLite table rebuild would lose it)."""
    from flask_migrate import downgrade

    from webapp.extensions import db

    def columns(table: str) -> set[str]:
        with db.engine.connect() as connection:
            return {column["name"] for column in sa.inspect(connection).get_columns(table)}

    def address_index() -> bool:
        with db.engine.connect() as connection:
            if ON_POSTGRES:
                query = "SELECT count(*) FROM pg_indexes WHERE indexname = 'ix_email_clinic_lower_to_address'"
            else:
                query = "SELECT count(*) FROM sqlite_master WHERE name = 'ix_email_clinic_lower_to_address'"
            return connection.execute(sa.text(query)).scalar() == 1

    migrate_to(scratch_app, "0014_incidents")
    now = utcnow()
    rows = {
        "clinic": {"name": "C", "created_at": now, "timezone": "UTC"},
        "client": {"clinic_id": 1, "name": "Jo", "email": "jo@x", "phone": "", "created_at": now},
        "email": {
            "clinic_id": 1,
            "client_id": 1,
            "app_message_id": "a-1",
            "to_address": "jo@x",
            "subject": "S",
            "body": "B",
            "kind": "receipt",
            "status": "sending",
            "version": 0,
            "provider": "sandbox",
            "send_state": "accepted",
            "send_attempts": 1,
            "status_changed_at": now,
            "created_at": now,
        },
    }
    with db.engine.begin() as connection:
        for table, values in rows.items():
            names = ", ".join(values)
            marks = ", ".join(f":{name}" for name in values)
            connection.execute(sa.text(f"INSERT INTO {table} ({names}) VALUES ({marks})"), values)
    migrate_to(scratch_app)
    assert "status_received_at" in columns("email") and "set_aside" in columns("webhook_batch")
    with db.engine.connect() as connection:
        assert connection.execute(sa.text("SELECT status_received_at FROM email")).scalar() is None
    assert address_index()
    downgrade(directory=scratch_app.extensions["migrate"].directory, revision="0014_incidents")
    assert "status_received_at" not in columns("email") and "set_aside" not in columns("webhook_batch")
    assert address_index()
    with db.engine.connect() as connection:
        assert connection.execute(sa.text("SELECT app_message_id FROM email")).scalar() == "a-1"
