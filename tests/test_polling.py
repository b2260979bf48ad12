"""Polling the provider: batches, one shared rate budget in Redis, young emails often, final never."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
import sqlalchemy as sa

from tests.helpers import add_content, run_jobs
from webapp.extensions import db
from webapp.models import Client, Email, EmailContent, EmailEvent, utcnow
from webapp.providers import get_provider, get_sandbox
from webapp.providers.base import ProviderEvent
from webapp.redis_keys import redis_key
from webapp.services import budget, polling, sending
from webapp.services.events import apply_events

# The database engine shapes what this module tests: CI runs it on PostgreSQL and on SQLite.
pytestmark = pytest.mark.engine


def send_many(app, world, app_clock, count: int, scenario: str = "delivered") -> list[Email]:
    emails = []
    for number in range(count):
        client = Client(
            clinic_id=world.clinic_a.id, name=f"C{number}", email=f"c{number}+{scenario}@example.com"
        )
        db.session.add(client)
        db.session.commit()
        emails.append(sending.queue_email(client, kind="receipt", subject="R", body="B", sent_by=None))
        add_content(emails[-1])  # an HTML part with a link, as the product sends: opens and clicks show
        db.session.commit()
    run_jobs(app)
    app_clock.advance(0.05)  # 50 of the sandbox's seconds
    for email in emails:
        db.session.refresh(email)
        email.next_poll_at = utcnow()
    db.session.commit()
    return emails


def test_one_batch_brings_every_due_email_up_to_date(app, world, app_clock):
    app.config["SANDBOX_SPEED"] = 1000.0
    emails = send_many(app, world, app_clock, 5)
    sandbox = get_sandbox(app.config)
    before = sandbox.requests_seen("/v3/messages")
    assert polling.poll_due() == 5
    assert sandbox.requests_seen("/v3/messages") - before == 1 + 5  # one list query, one detail each
    assert {db.session.get(Email, email.id).status for email in emails} == {"delivered"}


def test_all_workers_share_one_budget_per_minute(app, world, app_clock):
    app.config["SANDBOX_SPEED"] = 1000.0
    app.config["ACTIVITY_REQUESTS_PER_MINUTE"] = 3
    send_many(app, world, app_clock, 5)
    sandbox = get_sandbox(app.config)
    before = sandbox.requests_seen("/v3/messages")
    polling.poll_due()
    polling.poll_due()  # a second worker in the same minute finds the budget spent
    used = sandbox.requests_seen("/v3/messages") - before
    assert used == 3  # with nothing in doubt, polling may use settling's share too
    assert budget.usage(get_provider(app.config)) == {"settle": 0, "poll": 3}


def test_the_budget_is_a_sliding_window_not_a_calendar_minute(app, app_clock):
    """Requests taken at the end of one calendar minute still count at the start of the next: no
    60 seconds, wherever they start, hold more than the limit (a per-minute counter let 12 through
    in one 60 s window for a limit of 6). Requests given back free their room at once."""
    app.config["ACTIVITY_REQUESTS_PER_MINUTE"] = 6
    provider = get_provider(app.config)

    def take(wanted: int) -> budget.Grant:
        return budget.take(provider, budget.POLL, wanted)

    turn = 1_767_348_000.0  # a calendar minute begins
    app_clock.now = turn - 5
    assert take(6).requests == 6
    app_clock.now = turn + 1
    assert take(6).requests == 0  # a new calendar minute, the same 60 s
    app_clock.now = turn - 5 + 59.5
    assert take(1).requests == 0  # 59.5 s later: still inside
    app_clock.advance(1)
    grant = take(6)
    assert grant.requests == 6
    budget.give_back(grant, 2)  # only two were made
    assert budget.usage(provider)["poll"] == 2 and take(6).requests == 4

    # Five minutes of workers asking every 2.5 s and giving back what they did not use.
    rng = random.Random(20)
    made: list[tuple[float, int]] = []
    app_clock.advance(60)
    for _ in range(120):
        grant = take(rng.randint(1, 4))
        used = grant.requests - rng.randint(0, grant.requests)
        budget.give_back(grant, used)
        made.append((app_clock.now, used))
        app_clock.advance(2.5)
    busiest = max(sum(count for at, count in made if start <= at < start + 60) for start, _ in made)
    print(
        f"\n[budget] sliding window: {sum(c for _, c in made)} requests in 300 s, busiest 60 s held {busiest}"
    )
    assert busiest <= 6
    assert sum(count for _, count in made) >= 15  # and used: half the most 300 s could hold


def test_a_429_stops_every_worker_until_the_reset(app, world, app_clock):
    app.config["SANDBOX_SPEED"] = 1000.0
    emails = send_many(app, world, app_clock, 2)
    get_sandbox(app.config).fail_next(429, path_prefix="/v3/messages", retry_after=30)
    assert polling.poll_due() == 0
    ttl = app.extensions["redis"].pttl(redis_key(polling.BLOCKED_KEY))
    assert 20_000 < ttl <= 30_000
    assert budget.take(get_provider(app.config), budget.POLL, 5).requests == 0
    assert all(db.session.get(Email, email.id).status == "sending" for email in emails)


def test_young_emails_are_polled_often_old_ones_rarely_final_ones_never(app, world):
    email = sending.queue_email(world.client_a, kind="receipt", subject="R", body="B", sent_by=None)
    email.send_state = "accepted"
    now = utcnow()
    polling.schedule_next_poll(email, now)
    assert email.next_poll_at - now == timedelta(seconds=5)
    email.created_at = now - timedelta(hours=30)
    polling.schedule_next_poll(email, now)
    assert email.next_poll_at - now == timedelta(hours=1)
    email.created_at = now - timedelta(days=5)
    polling.schedule_next_poll(email, now)
    assert email.next_poll_at is None
    email.created_at = now
    email.status = "failed"
    polling.schedule_next_poll(email, now)
    assert email.next_poll_at is None
    db.session.rollback()


def test_the_poll_job_runs_through_the_queue(app, world, app_clock):
    app.config["SANDBOX_SPEED"] = 1000.0
    emails = send_many(app, world, app_clock, 1, scenario="clicked")
    from webapp.queue import get_queue

    get_queue().enqueue("jobs.polling.poll_provider")
    run_jobs(app)
    email = db.session.execute(sa.select(Email).where(Email.id == emails[0].id)).scalar_one()
    assert email.status == "clicked"
    assert email.last_polled_at is not None


class _PurgedWhileAsked:
    """A provider that answers for every email, while the retention purge removes the first one."""

    def __init__(self, inner, gone: Email) -> None:
        self.inner, self.gone_id = inner, gone.id

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def poll(self, refs, max_requests):
        result = self.inner.poll(refs, max_requests)
        # As the purge does, in Core: the ORM object stays loaded, as in the poller's own session.
        for table, column in ((EmailEvent.__table__, "email_id"), (EmailContent.__table__, "email_id")):
            db.session.execute(table.delete().where(table.c[column] == self.gone_id))
        db.session.execute(Email.__table__.delete().where(Email.__table__.c.id == self.gone_id))
        return result


def test_an_email_purged_while_the_provider_answered_gets_no_events_and_the_rest_are_stored(
    app, world, app_clock
):
    app.config["SANDBOX_SPEED"] = 1000.0
    gone, *kept = send_many(app, world, app_clock, 3)
    gone_id = gone.id
    provider = _PurgedWhileAsked(get_provider(app.config), gone)
    assert polling._poll_batch(provider, utcnow()) == 2
    db.session.expire_all()
    assert db.session.get(Email, gone_id) is None
    orphans = sa.select(sa.func.count()).select_from(EmailEvent).where(EmailEvent.email_id == gone_id)
    assert db.session.execute(orphans).scalar() == 0  # no foreign key would have refused them
    assert {db.session.get(Email, email.id).status for email in kept} == {"delivered"}


def test_an_event_for_an_email_purged_meanwhile_is_not_stored(app, world):
    email = sending.queue_email(world.client_a, kind="receipt", subject="R", body="B", sent_by=None)
    db.session.commit()
    email_id = email.id
    db.session.execute(EmailEvent.__table__.delete().where(EmailEvent.__table__.c.email_id == email_id))
    db.session.execute(EmailContent.__table__.delete().where(EmailContent.__table__.c.email_id == email_id))
    db.session.execute(Email.__table__.delete().where(Email.__table__.c.id == email_id))
    delivered = ProviderEvent("delivered", utcnow(), app_message_id=email.app_message_id)
    assert apply_events(email, [delivered], source="webhook") is False
    db.session.commit()
    orphans = sa.select(sa.func.count()).select_from(EmailEvent).where(EmailEvent.email_id == email_id)
    assert db.session.execute(orphans).scalar() == 0
