"""Sending through the real worker, the real SendGrid adapter and the sandbox: every outcome,
and never a second accepted send for the same email."""

from __future__ import annotations

import json
import sqlite3
from datetime import timedelta

import httpx
import pytest
import sqlalchemy as sa

from tests.helpers import WIRE_FORMATS, run_jobs
from webapp.extensions import db
from webapp.models import Email, OperatorAlert, utcnow
from webapp.providers import get_provider, get_sandbox
from webapp.queue import get_queue
from webapp.services import in_doubt, sending
from webapp.services.polling import poll_due

# The database engine shapes what this module tests: CI runs it on PostgreSQL and on SQLite.
pytestmark = pytest.mark.engine


def accepted_sends(app, email: Email) -> int:
    """Count the messages the provider's side accepted for this email."""
    with sqlite3.connect(app.config["SANDBOX_STATE_PATH"]) as state:
        rows = state.execute("SELECT custom_args FROM messages").fetchall()
    return sum(1 for (args,) in rows if json.loads(args).get("app_message_id") == email.app_message_id)


def queue(world, address: str | None = None) -> Email:
    return sending.queue_email(
        world.client_a,
        kind="appointment_reminder",
        subject="Appointment reminder",
        body="See you on Monday",
        sent_by=world.users["clinician"],
        to_address=address,
    )


def make_due(email: Email) -> None:
    email.next_attempt_at = utcnow() - timedelta(seconds=1)
    db.session.commit()


@pytest.mark.parametrize("wire_format", WIRE_FORMATS)
def test_a_queued_email_is_sent_once_by_the_worker_and_reaches_delivered(app, world, wire_format, app_clock):
    app.config["SANDBOX_SPEED"] = 1000.0  # the sandbox's seconds pass in milliseconds
    email = queue(world)
    assert email.status == "sending"
    assert len(get_queue()) == 1
    run_jobs(app)
    db.session.refresh(email)
    assert email.send_state == "accepted"
    assert email.provider_message_id
    assert accepted_sends(app, email) == 1
    # A re-run of the same job, and the sweeper, never send it again.
    get_queue().enqueue(sending.SEND_JOB)
    run_jobs(app)
    assert sending.deliver(email.id) == "accepted"
    assert accepted_sends(app, email) == 1
    email.next_poll_at = utcnow()
    db.session.commit()
    app_clock.advance(0.05)  # 50 of the sandbox's seconds
    assert poll_due() == 1
    db.session.refresh(email)
    assert email.status == "delivered"


@pytest.mark.parametrize("wire_format", WIRE_FORMATS)
def test_an_invalid_address_fails_with_the_providers_own_words(app, world, wire_format):
    email = queue(world, address="not-an-address")
    run_jobs(app)
    db.session.refresh(email)
    assert email.send_state == "refused"
    assert email.status == "failed"
    assert "address" in (email.send_error or "").lower()  # the provider's own words
    assert [event.kind for event in email.events] == ["sending", "rejected"]
    assert email.events[-1].reject_reason == "invalid_address"  # our words, beside SendGrid's


@pytest.mark.parametrize("wire_format", WIRE_FORMATS)
def test_a_bad_api_key_keeps_the_email_queued_and_alerts_operators(app, world, wire_format):
    app.config["EMAIL_PROVIDER"] = "sandbox"
    email = queue(world)
    provider = get_provider(app.config)
    if wire_format == "postmark":
        provider._client.headers["X-Postmark-Server-Token"] = "sandbox-invalid"
    else:
        provider._client.headers["Authorization"] = "Bearer sandbox-forbidden"
    assert sending.deliver(email.id, provider) == "queued"
    db.session.refresh(email)
    assert email.status == "sending"
    assert email.next_attempt_at > utcnow()
    alert = db.session.execute(sa.select(OperatorAlert)).scalar_one()
    assert alert.kind == "provider_auth"
    # The alert names the setting of the provider in use.
    assert ("POSTMARK_SERVER_TOKEN" if wire_format == "postmark" else "SENDGRID_API_KEY") in alert.message
    assert accepted_sends(app, email) == 0


def test_rate_limited_sends_wait_as_the_headers_say(app, world, app_clock):
    email = queue(world)
    get_sandbox(app.config).fail_next(429, path_prefix="/v3/mail/send", retry_after=120)
    assert sending.deliver(email.id) == "queued"
    db.session.refresh(email)
    wait = (email.next_attempt_at - utcnow()).total_seconds()
    assert 100 < wait <= 121
    app_clock.advance(121)
    assert sending.deliver(email.id) == "accepted"
    assert accepted_sends(app, email) == 1


def test_a_429_holds_back_every_send_of_the_account_until_its_reset(app, world):
    first, second = queue(world), queue(world)
    sandbox = get_sandbox(app.config)
    sandbox.fail_next(429, path_prefix="/v3/mail/send", retry_after=120)
    before = sandbox.requests_seen("/v3/mail/send")
    assert sending.deliver(first.id) == "queued"
    assert sending.deliver(second.id) == "queued"
    assert sandbox.requests_seen("/v3/mail/send") - before == 1  # the second never asked
    db.session.refresh(second)
    assert 100 < (second.next_attempt_at - utcnow()).total_seconds() <= 121
    assert sending.due_sends(utcnow() + timedelta(minutes=5)) == []


def test_a_server_error_is_retried_without_a_second_accepted_send(app, world, app_clock):
    email = queue(world)
    sandbox = get_sandbox(app.config)
    sandbox.accept_then_fail_next()  # accepted, but the answer is lost as a 500
    assert sending.deliver(email.id) == "in_doubt"
    assert accepted_sends(app, email) == 1
    app_clock.advance(31)  # by the check, the provider's records show the message
    assert in_doubt.check_in_doubt() == 1
    db.session.refresh(email)
    assert email.send_state == "accepted"
    assert email.provider_message_id
    assert accepted_sends(app, email) == 1


def test_a_server_error_before_acceptance_is_sent_again(app, world, app_clock):
    email = queue(world)
    get_sandbox(app.config).fail_next(503, path_prefix="/v3/mail/send")
    assert sending.deliver(email.id) == "in_doubt"
    assert accepted_sends(app, email) == 0
    app_clock.advance(5)
    assert in_doubt.check_in_doubt() == 0  # not due yet
    # Not found, but the provider's records may lag: keep waiting.
    app_clock.advance(26)
    assert in_doubt.check_in_doubt() == 0
    db.session.refresh(email)
    assert email.send_state == "in_doubt"
    assert email.next_attempt_at == email.send_claimed_at + sending.in_doubt_grace()
    app_clock.advance(270)
    assert in_doubt.check_in_doubt() == 1
    db.session.refresh(email)
    assert email.send_state == "queued"
    run_jobs(app)
    db.session.refresh(email)
    assert email.send_state == "accepted"
    assert accepted_sends(app, email) == 1


def test_a_timeout_is_in_doubt_not_failed(app, world):
    from webapp.providers.sendgrid import SendGridProvider

    class Timeout(httpx.BaseTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            raise httpx.ReadTimeout("no answer", request=request)

    email = queue(world)
    assert (
        sending.deliver(email.id, SendGridProvider("key", "http://x.invalid", transport=Timeout()))
        == "in_doubt"
    )
    db.session.refresh(email)
    assert email.status == "sending"


def test_a_sweep_re_enqueues_sends_that_redis_lost(app, world):
    from webapp.services.maintenance import sweep

    email = queue(world)
    app.extensions["redis"].flushdb()  # Redis lost the job
    email.created_at = utcnow() - timedelta(minutes=1)
    db.session.commit()
    assert sweep()["sends"] == 1
    sweep()  # a second sweep before any worker ran queues no second copy
    assert len(get_queue()) == 1
    run_jobs(app)
    db.session.refresh(email)
    assert email.send_state == "accepted"
    assert accepted_sends(app, email) == 1


def test_a_send_abandoned_mid_call_is_checked_before_any_resend(app, world):
    from webapp.services.maintenance import sweep

    app.config["SANDBOX_SPEED"] = 1000.0
    email = queue(world)
    sending.deliver(email.id)
    assert accepted_sends(app, email) == 1
    # The worker died after the provider accepted but before we recorded it.
    email.send_state = "claimed"
    email.provider_message_id = None
    email.send_claimed_at = utcnow() - timedelta(minutes=6)
    db.session.commit()
    assert sweep()["abandoned"] == 1
    db.session.refresh(email)
    assert email.send_state == "in_doubt"
    assert email.in_doubt_since == email.send_claimed_at
    run_jobs(app)  # the poll job checks in-doubt sends first
    in_doubt.check_in_doubt()
    db.session.refresh(email)
    assert email.send_state == "accepted"
    assert email.provider_message_id
    assert accepted_sends(app, email) == 1


def test_an_address_on_the_spam_list_is_refused_before_anything_is_queued(app, world):
    from webapp.services.events import add_to_spam_list

    add_to_spam_list(world.client_a.email, utcnow(), None, "sync")
    db.session.commit()
    try:
        queue(world)
    except sending.SendRefused as refused:
        assert "is blocked" in refused.reason and refused.spam_entry is not None
    else:
        raise AssertionError("the send was not refused")
    assert db.session.execute(sa.select(sa.func.count(Email.id))).scalar() == 0
    assert len(get_queue()) == 0


@pytest.mark.parametrize("wire_format", WIRE_FORMATS)
def test_a_send_to_a_suppressed_address_is_dropped_and_says_why(app, world, wire_format, app_clock):
    app.config["SANDBOX_SPEED"] = 1000.0
    email = queue(world, address="marco.rossi+dropped@example.com")
    run_jobs(app)
    app_clock.advance(0.05)  # 50 of the sandbox's seconds
    email.next_poll_at = utcnow()
    db.session.commit()
    poll_due()
    db.session.refresh(email)
    assert email.status == "failed"
    from webapp.services.timelines import failure_reason

    assert failure_reason(email) == "the client reported an earlier email as spam"
    assert sending.spam_list_entry("marco.rossi+dropped@example.com") is not None


def test_a_burst_of_emails_is_sent_by_a_few_batch_jobs_each_once(app, world, monkeypatch):
    from webapp.providers.sendgrid import SendGridProvider

    monkeypatch.setattr(SendGridProvider, "max_batch", 4)
    emails = [queue(world) for _ in range(9)] + [queue(world, address="not-an-address")]
    assert len(get_queue()) == 1  # the first email's wake-up job sees the others: no job per email
    finished = get_queue().finished_job_registry
    run_jobs(app)
    # 4 + 4 + 2: each full batch woke the next one.
    assert finished.count == 3
    db.session.expire_all()
    states = [db.session.get(Email, email.id).send_state for email in emails]
    assert states == ["accepted"] * 9 + ["refused"]
    assert all(accepted_sends(app, email) == 1 for email in emails[:9])
    assert sending.deliver_due() == 0  # nothing left: nothing sent again
    assert sum(accepted_sends(app, email) for email in emails) == 9
