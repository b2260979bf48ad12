"""Every `flask --app wsgi <command>` works under Flask's own test runner, which (unlike the
`flask` command) pushes no app context: each command pushes its own, as with_appcontext gives."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskCliRunner

from tests.helpers import ON_POSTGRES

COMMANDS = (
    "init-db",
    "seed-demo",
    "seed-load",
    "create-user",
    "sandbox-client-mail",
    "worker",
    "scheduler",
    "up",
    "purge-old-records",
    "purge-audit",
)


@pytest.fixture
def bare_app(make_app) -> Flask:
    """The app with no app context pushed around the test, as a command line starts."""
    return make_app(AUDIT_RETENTION_DAYS=400)


def run(app: Flask, *args: str) -> str:
    result = FlaskCliRunner(app).invoke(args=list(args))
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


def test_every_command_is_registered(bare_app):
    assert set(COMMANDS) <= set(bare_app.cli.list_commands(None))


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_explains_itself(bare_app, command):
    output = run(bare_app, command, "--help")
    assert output.splitlines()[0].endswith(f" {command} [OPTIONS]")
    summary = bare_app.cli.get_command(None, command).help.split("\n")[0].split()[:3]
    assert " ".join(summary) in " ".join(output.split())  # the command's own docstring


def test_init_db_and_the_account_commands_run_without_an_outer_app_context(bare_app):
    from webapp.extensions import db
    from webapp.models import Clinic, User

    assert "Database is up to date." in run(bare_app, "init-db")
    assert "Created owner pat@example.com." in run(
        bare_app,
        "create-user",
        "--email",
        "pat@example.com",
        "--name",
        "Pat",
        "--role",
        "owner",
        "--clinic",
        "Hillside",
        "--password",
        "a long enough password",
    )
    output = run(bare_app, "seed-demo", "--password", "demo password 123")
    assert "clinician@example.com" in output
    with bare_app.app_context():
        assert db.session.execute(sa.select(User.email).where(User.email == "pat@example.com")).scalar()
        assert db.session.execute(sa.select(sa.func.count(Clinic.id))).scalar() == 2
    # Seeding again keeps the data and sets the password.
    assert "already present" in run(bare_app, "seed-demo", "--password", "another password 456")


def test_the_sandbox_mail_worker_and_records_commands_run_without_an_outer_app_context(bare_app):
    run(bare_app, "seed-demo", "--password", "demo password 123")
    from webapp.extensions import db
    from webapp.models import Client

    with bare_app.app_context():
        address = db.session.execute(sa.select(Client.email).order_by(Client.id)).scalars().first()
    assert f"Sent a removal request from {address}" in run(bare_app, "sandbox-client-mail", "--from", address)
    run(bare_app, "worker", "--burst")  # checks the removal request the command filed
    assert "emails 0" in run(bare_app, "purge-old-records")
    assert "Removed 0 audit lines older than 400 days." in run(bare_app, "purge-audit")


@pytest.mark.engine
def test_seed_load_makes_a_tiny_data_set_or_says_it_needs_postgresql(bare_app):
    result = FlaskCliRunner(bare_app).invoke(
        args=[
            "seed-load",
            "--clinics",
            "1",
            "--clients",
            "2",
            "--emails",
            "3",
            "--password",
            "load password 1",
        ]
    )
    if ON_POSTGRES:
        assert result.exit_code == 0, (result.output, result.exception)
        assert "Made 1 clinics, 2 clients and 3 emails" in result.output
    else:
        assert result.exit_code == 1
        assert "PostgreSQL" in result.output


def test_the_worker_applies_webhook_batches_in_its_own_process_and_forks_others(bare_app, monkeypatch):
    """No fork and no new database connection per batch; a job forked after one still gets its own
    connection, not the worker's."""
    import json
    import os

    from rq.job import JobStatus

    from webapp.extensions import db
    from webapp.models import Client, Clinic, Email, WebhookBatch
    from webapp.queue import get_queue
    from webapp.services import webhooks

    ran_in: list[int] = []
    real = webhooks.apply_batch

    def recording(batch_id: int, more: int | None = None) -> int:
        ran_in.append(os.getpid())  # a forked child's list is not this one
        return real(batch_id, more)

    monkeypatch.setattr(webhooks, "apply_batch", recording)
    with bare_app.app_context():
        clinic = Clinic(name="Worker Clinic")
        db.session.add(clinic)
        db.session.flush()
        client = Client(clinic_id=clinic.id, name="Wendy", email="wendy@example.com")
        db.session.add(client)
        db.session.flush()
        email = Email(
            clinic_id=clinic.id,
            client_id=client.id,
            to_address=client.email,
            subject="Reminder",
            body="Hello",
            kind="appointment_reminder",
            provider="sendgrid",
            send_state="accepted",
        )
        db.session.add(email)
        db.session.commit()
        email_id, app_message_id = email.id, email.app_message_id
        queue = get_queue()
        batch_ids = []
        forked = None
        for kind in ("delivered", "open"):
            event = {"event": kind, "timestamp": 1767348000, "app_message_id": app_message_id}
            batch_ids.append(webhooks.store_batch("sendgrid", json.dumps([event]).encode()).id)
            queue.enqueue(webhooks.APPLY_JOB, batch_ids[-1])
            forked = forked or queue.enqueue("jobs.maintenance.sweep")
    run(bare_app, "worker", "--burst")
    assert ran_in == [os.getpid(), os.getpid()]
    with bare_app.app_context():
        assert forked.get_status(refresh=True) == JobStatus.FINISHED
        assert all(db.session.get(WebhookBatch, batch_id).applied_at for batch_id in batch_ids)
        assert db.session.get(Email, email_id).status == "open"
