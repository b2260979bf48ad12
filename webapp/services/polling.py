"""Polling the provider for status: reconciliation beside the event webhook.

The provider's records API allows only so many requests a minute per account, so every worker
draws from one budget kept in Redis (polling's share of it: webapp/services/budget.py); young
emails are asked about often, older ones rarely, and emails whose status is final not at all.
"""

from __future__ import annotations

import contextlib
import logging
from datetime import datetime, timedelta

import sqlalchemy as sa
from flask import current_app
from redis.exceptions import LockError, RedisError

from webapp import statuses
from webapp.extensions import db
from webapp.models import Email, utcnow
from webapp.providers import get_provider
from webapp.providers.base import EmailProvider, PollRef
from webapp.redis_keys import redis_key
from webapp.services import budget, clock_skew
from webapp.services.budget import BLOCKED_KEY, block, block_polling, blocked_until  # noqa: F401 (used from here)
from webapp.services.events import Target, lock_emails, store_events

log = logging.getLogger(__name__)

POLL_LOCK_KEY = "activity-poll-lock"

# (age of the email, how long to wait between polls); past the last age we stop polling.
POLL_SCHEDULE: tuple[tuple[timedelta, timedelta], ...] = (
    (timedelta(minutes=10), timedelta(seconds=5)),
    (timedelta(hours=1), timedelta(minutes=1)),
    (timedelta(hours=24), timedelta(minutes=15)),
    (timedelta(hours=80), timedelta(hours=1)),  # deferrals are retried for up to 72 hours
)


def schedule_next_poll(email: Email, now: datetime) -> None:
    """Set when to ask the provider about this email next (None: never again)."""
    if statuses.get(email.status).final or email.send_state != "accepted":
        email.next_poll_at = None
        return
    age = now - email.created_at
    for younger_than, wait in POLL_SCHEDULE:
        if age < younger_than:
            email.next_poll_at = now + wait
            return
    email.next_poll_at = None


def due_for_poll(now: datetime, limit: int) -> list[Email]:
    """Return the emails whose next poll time has come, oldest due first."""
    return list(
        db.session.execute(
            sa.select(Email)
            .where(Email.next_poll_at <= now, Email.send_state == "accepted")
            .order_by(Email.next_poll_at)
            .limit(limit)
        ).scalars()
    )


def poll_due(provider: EmailProvider | None = None) -> int:
    """Ask the provider about every email due for a poll, in one batch; return how many changed."""
    lock = current_app.extensions["redis"].lock(redis_key(POLL_LOCK_KEY), timeout=120, blocking=False)
    if not lock.acquire():
        return 0  # another worker is polling this very batch
    try:
        return _poll_batch(provider or get_provider(current_app.config), utcnow())
    finally:
        with contextlib.suppress(LockError, RedisError):  # it expires by itself
            lock.release()


def _poll_batch(provider: EmailProvider, now: datetime) -> int:
    # In id order, like the webhook job: concurrent writers then lock emails in one order.
    emails = sorted(due_for_poll(now, current_app.config["POLL_BATCH_SIZE"]), key=lambda email: email.id)
    if not emails:
        return 0
    grant = budget.take(provider, budget.POLL, 1 + len(emails))
    if grant.requests == 0:
        return 0
    refs = [PollRef(email.app_message_id, email.provider_message_id or "") for email in emails]
    result = provider.poll(refs, grant.requests)
    budget.give_back(grant, result.requests_made)
    if result.rate_limited_for:
        block_polling(result.rate_limited_for)
    if result.error:
        log.warning("polling the email provider stopped early: %s", result.error)
    batch = {
        email.id: (Target(email.id, email.clinic_id, email.client_id, email.to_address), events)
        for email in emails
        if (events := result.events.get(email.app_message_id))
    }
    clock_skew.note_event_times(event for _, events in batch.values() for event in events)
    # An email the retention purge removed while the provider answered is left alone: no events
    # (email_event has no foreign key), no next poll (an update of a row that is gone fails).
    locked = lock_emails(email.id for email in emails)
    batch = {email_id: entry for email_id, entry in batch.items() if email_id in locked}
    changed = len(store_events(batch, source="poll"))
    for email in emails:
        if email.id not in locked:
            continue
        # Emails the answer did not reach keep their turn at the head of the queue (unless the
        # provider failed outright: then everyone waits for the normal interval).
        if email.app_message_id in result.covered or result.error:
            email.last_polled_at = now
            schedule_next_poll(email, now)
    db.session.commit()
    return changed
