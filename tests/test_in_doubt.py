"""Settling sends in doubt: each provider's lookups budgeted by their own cost and limit, settling
and polling each with their share, and an email handed to the provider at most twice."""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from datetime import timedelta

import pytest
import sqlalchemy as sa

from tests.helpers import WIRE_FORMATS, login, row_html, run_jobs, text
from webapp.extensions import db
from webapp.models import Client, Email, Incident, OperatorAlert, utcnow
from webapp.providers import get_provider, get_sandbox
from webapp.providers.base import ProviderEvent
from webapp.queue import get_queue
from webapp.services import budget, in_doubt, maintenance, sending
from webapp.services.webhooks import apply_provider_events


def acceptances(app) -> Counter[str]:
    """Count the messages the provider's side took, per app_message_id."""
    with sqlite3.connect(app.config["SANDBOX_STATE_PATH"]) as state:
        rows = state.execute("SELECT custom_args FROM messages").fetchall()
    return Counter(json.loads(args).get("app_message_id") for (args,) in rows)


def clients(world, count: int, scenario: str) -> list[Client]:
    made = [
        Client(clinic_id=world.clinic_a.id, name=f"C{n}", email=f"c{n}+{scenario}@example.com")
        for n in range(count)
    ]
    db.session.add_all(made)
    db.session.commit()
    return made


def queue(client: Client) -> Email:
    return sending.queue_email(client, kind="receipt", subject="Receipt", body="Thanks", sent_by=None)


# The budget


def test_each_provider_declares_its_lookup_cost_and_limit(make_app):
    for wire, per_minute, per_lookup in (("sendgrid", 6, 50), ("postmark", 240, 1)):
        app = make_app(SANDBOX_WIRE_FORMAT=wire, ACTIVITY_REQUESTS_PER_MINUTE=0)
        with app.app_context():
            provider = get_provider(app.config)
            assert provider.records_cost.requests_per_minute == per_minute
            assert provider.records_cost.emails_per_lookup == per_lookup
            assert budget.limit(provider) == per_minute  # no setting: the provider's own figure
            app.config["ACTIVITY_REQUESTS_PER_MINUTE"] = 30
            assert budget.limit(provider) == 30  # the account's plan, when set
    assert budget.shares(6) == {"settle": 3, "poll": 3} and budget.shares(7) == {"settle": 4, "poll": 3}


def test_settling_and_polling_keep_their_shares_while_both_have_work(app, app_clock):
    app.config["ACTIVITY_REQUESTS_PER_MINUTE"] = 10
    provider = get_provider(app.config)
    assert budget.take(provider, budget.POLL, 100).requests == 10  # alone, polling may use it all
    app_clock.advance(61)
    # Both have work: polling asking for everything leaves settling its share, and the other way round.
    assert budget.take(provider, budget.SETTLE, 1).requests == 1
    assert budget.take(provider, budget.POLL, 100).requests == 5
    assert budget.take(provider, budget.SETTLE, 100).requests == 4
    assert budget.take(provider, budget.POLL, 100).requests == 0
    assert budget.usage(provider) == {"settle": 5, "poll": 5}
    app_clock.advance(61)
    # Settling asked for nothing for a minute (nothing in doubt): polling may have it all again.
    assert budget.take(provider, budget.POLL, 100).requests == 10


def test_the_budget_is_a_sliding_minute_and_unused_requests_come_back(app, app_clock):
    app.config["ACTIVITY_REQUESTS_PER_MINUTE"] = 6
    provider = get_provider(app.config)
    grant = budget.take(provider, budget.POLL, 4)
    budget.give_back(grant, used=1)  # three were not made
    assert budget.usage(provider)["poll"] == 1
    app_clock.advance(40)
    assert budget.take(provider, budget.POLL, 10).requests == 5
    app_clock.advance(30)  # 70 s after the first request, 30 s after the others
    assert budget.take(provider, budget.POLL, 10).requests == 1
    app_clock.advance(31)
    assert budget.take(provider, budget.POLL, 10).requests == 5


@pytest.mark.parametrize("wire_format", ["postmark"])
def test_postmark_lookups_cost_one_search_an_email(app, world, wire_format, app_clock):
    app.config.update(ACTIVITY_REQUESTS_PER_MINUTE=0, SANDBOX_SPEED=1000.0)
    emails = [queue(client) for client in clients(world, 60, "delivered")]
    run_jobs(app)
    # Their answers were lost: Postmark has them, we cannot tell.
    for email in emails:
        db.session.refresh(email)
        email.send_state, email.provider_message_id = "in_doubt", None
        email.next_attempt_at = utcnow()
    db.session.commit()
    sandbox = get_sandbox(app.config)
    provider = get_provider(app.config)
    searches = sandbox.requests_seen("/messages/outbound")
    assert in_doubt.requests_per_check(provider) == 20  # a twelfth of Postmark's 240 a minute
    for _ in range(3):
        assert in_doubt.check_in_doubt() == 20
        app_clock.advance(5)
    assert sandbox.requests_seen("/messages/outbound") - searches == 60  # one search an email
    assert {db.session.get(Email, email.id).send_state for email in emails} == {"accepted"}
    assert budget.usage(provider)["settle"] == 60
    assert sum(acceptances(app).values()) == 60  # none sent twice


# Handed over at most twice


@pytest.mark.parametrize("wire_format", WIRE_FORMATS)
def test_an_email_the_provider_takes_but_never_reports_is_handed_over_twice_then_held(
    app, world, client, wire_format, app_clock
):
    (silent,) = clients(world, 1, "silent")
    email = queue(silent)
    run_jobs(app)
    db.session.refresh(email)
    assert email.send_state == "in_doubt"  # taken, but the answer was lost
    grace = sending.in_doubt_grace().total_seconds()
    app_clock.advance(31)
    in_doubt.check_in_doubt()  # its records do not show it, but they may lag
    db.session.refresh(email)
    assert email.send_state == "in_doubt"
    app_clock.advance(grace)
    assert in_doubt.check_in_doubt() == 1
    db.session.refresh(email)
    assert (email.send_state, email.resends_unfound) == ("queued", 1)
    run_jobs(app)
    db.session.refresh(email)
    assert email.send_state == "in_doubt" and acceptances(app)[email.app_message_id] == 2
    app_clock.advance(31)
    in_doubt.check_in_doubt()
    app_clock.advance(grace)
    assert in_doubt.check_in_doubt() == 1
    db.session.refresh(email)
    assert email.send_state == "held" and email.next_attempt_at is None
    # An hour of checks, sweeps and send jobs: never a third handover.
    for _ in range(12):
        app_clock.advance(300)
        maintenance.sweep()
        in_doubt.check_in_doubt()
        run_jobs(app)
    assert acceptances(app)[email.app_message_id] == 2
    db.session.refresh(email)
    assert email.send_state == "held"
    [alert] = db.session.execute(sa.select(OperatorAlert).where(OperatorAlert.email_id == email.id)).scalars()
    assert alert.kind == "email_unreported" and alert.resolved_at is None
    assert "accepted it but has not reported on it" in alert.message and email.reference in alert.message
    login(client, "clinician@a.example")
    row = text(row_html(client.get(f"/clients/{silent.id}").get_data(as_text=True), email))
    assert "The email provider accepted it but has not reported on it" in row
    assert f"(reference {email.reference})" in row and "looks stuck" not in row


def test_a_held_email_that_an_event_later_proves_is_settled_and_its_alert_resolves(app, world):
    (silent,) = clients(world, 1, "silent")
    email = queue(silent)
    email.send_state, email.resends_unfound = "in_doubt", 1
    email.in_doubt_since = email.send_claimed_at = utcnow() - timedelta(minutes=12)
    in_doubt.hold(email, get_provider(app.config), utcnow())
    db.session.commit()
    incident = db.session.execute(sa.select(Incident)).scalar_one()
    assert (incident.kind, incident.scope) == ("email_unreported", "provider:sandbox")
    delivered = ProviderEvent(
        "delivered", utcnow(), app_message_id=email.app_message_id, provider_message_id="X1"
    )
    apply_provider_events([delivered], "webhook")
    db.session.commit()
    db.session.refresh(email)
    assert (email.send_state, email.provider_message_id) == ("accepted", "X1")
    maintenance.flag_stuck_emails(utcnow())
    assert db.session.execute(sa.select(OperatorAlert.resolved_at)).scalar_one() is not None
    db.session.refresh(incident)
    assert incident.closed_at is not None  # its cause cleared: it closed by itself


def test_a_lost_answer_after_a_second_handover_that_was_not_found_is_held_not_resent(app, world, app_clock):
    """The SendGrid path: the provider failed the request before taking it, twice."""
    (client_,) = clients(world, 1, "delivered")
    email = queue(client_)
    sandbox = get_sandbox(app.config)
    for handover in (1, 2):
        sandbox.fail_next(503, path_prefix="/v3/mail/send")
        run_jobs(app)
        db.session.refresh(email)
        assert email.send_state == "in_doubt", handover
        app_clock.advance(sending.in_doubt_grace().total_seconds() + 1)
        in_doubt.check_in_doubt()
    db.session.refresh(email)
    assert email.send_state == "held" and acceptances(app)[email.app_message_id] == 0


@pytest.mark.parametrize("wire_format", ["postmark"])
def test_a_postmark_outage_puts_one_email_of_a_batch_in_doubt_and_the_rest_wait(app, world, wire_format):
    emails = [queue(client) for client in clients(world, 5, "delivered")]
    app.extensions["redis"].flushdb()  # the send jobs queue_email woke: this test runs one by hand
    get_sandbox(app.config).fail_next(500, path_prefix="/email/batch")
    assert sending.deliver_due() == 5
    states = {db.session.get(Email, email.id).send_state for email in emails[1:]}
    first = db.session.get(Email, emails[0].id)
    assert first.send_state == "in_doubt" and states == {"queued"}
    for email in emails[1:]:
        waits = (db.session.get(Email, email.id).next_attempt_at - utcnow()).total_seconds()
        assert 25 < waits <= 30  # not at once into the same outage
    assert get_sandbox(app.config).requests_seen("/email/batch") == 1
    assert len(get_queue()) == 0  # no job woken to hammer it
    assert sum(acceptances(app).values()) == 0
