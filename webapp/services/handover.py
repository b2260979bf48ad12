"""Handing queued emails to the provider exactly once, and recording what became of each.

A send is claimed (and committed) before the provider is called, so a re-run job, a second
worker or the sweeper never sends it again. When we cannot tell whether the provider took a
message (a timeout, a server error), the email is "in doubt" and we ask the provider before
trying again (webapp/services/in_doubt.py): a missed email is visible in the log, a duplicate
clinical email is not undoable.

Sends go out in batches: one job claims up to the provider's `max_batch` due emails in one
statement, hands them to `send_batch` and records each one's result as a single send's would be.
A job that claimed a full batch wakes another before calling the provider, so workers share a
backlog; a fork, an app context and two commits are paid per batch, not per email.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
import sqlalchemy.orm as so
from flask import current_app
from redis.exceptions import RedisError

from webapp.extensions import db
from webapp.freshness.counters import mark_changed
from webapp.models import Email, EmailContent, utcnow
from webapp.providers import get_provider
from webapp.providers.base import (
    Attachment,
    EmailProvider,
    OutgoingMessage,
    ProviderEvent,
    RejectReason,
    SendResult,
)
from webapp.redis_keys import redis_key
from webapp.services import alerts, calendar_file
from webapp.services.events import apply_events
from webapp.services.polling import schedule_next_poll
from webapp.services.send_rate_limit import block_sends, sends_blocked_until, wait_for_rate_limit
from webapp.services.sending import SEND_WAKE_KEY, headers_for, wake_senders

log = logging.getLogger(__name__)

MAX_BACKOFF = timedelta(minutes=10)
# The first look at the provider's records after a lost answer: most accepted sends show by then.
# Until IN_DOUBT_GRACE_SECONDS after the attempt, "not found" only means "not yet".
IN_DOUBT_RECHECK = timedelta(seconds=30)


def _clear_wake() -> None:
    """Say that this job is about to look for due emails (so the next email queues a new job)."""
    try:
        current_app.extensions["redis"].delete(redis_key(SEND_WAKE_KEY))
    except RedisError as error:
        log.warning("could not clear the sender wake-up mark: %s", error)


def deliver_due(provider: EmailProvider | None = None) -> int:
    """Claim up to one batch of due emails, hand them over in one batch, record each result;
    return how many were claimed."""
    _clear_wake()
    now = utcnow()
    blocked = sends_blocked_until()
    if blocked is not None:
        wait_for_rate_limit(sa.true(), blocked)
        return 0
    provider = provider or get_provider(current_app.config)
    limit = max(1, provider.max_batch)
    # SKIP LOCKED: two jobs claiming at once take different emails instead of queueing for the
    # same rows (SQLite has no row locks: its writers take turns, and the state check holds).
    # Materialized: inlined into the UPDATE, PostgreSQL may run the locking subquery again per
    # row, skipping its own locks, and claim past the limit.
    due = (
        sa.select(Email.id)
        .where(_is_due(now))
        .order_by(Email.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .cte("due")
        .prefix_with("MATERIALIZED", dialect="postgresql")
    )
    claimed = _claim(Email.id.in_(sa.select(due.c.id)), now)
    if len(claimed) == limit:
        wake_senders()  # there may be more: another worker takes the next batch meanwhile
    _send_claimed(claimed, provider, now)
    return len(claimed)


def deliver(email_id: int, provider: EmailProvider | None = None) -> str:
    """Hand one queued email to the provider unless that already happened; return its send state."""
    now = utcnow()
    blocked = sends_blocked_until()
    if blocked is not None:
        wait_for_rate_limit(Email.id == email_id, blocked)
    else:
        claimed = _claim(Email.id == email_id, now)
        _send_claimed(claimed, provider or get_provider(current_app.config), now)
    state = db.session.execute(sa.select(Email.send_state).where(Email.id == email_id)).scalar()
    db.session.commit()
    return state or "missing"


def _is_due(now: datetime) -> sa.ColumnElement[bool]:
    return sa.and_(
        Email.send_state == "queued",
        sa.or_(Email.next_attempt_at.is_(None), Email.next_attempt_at <= now),
    )


def _claim(which: sa.ColumnElement[bool], now: datetime) -> dict[int, int]:
    """Claim due emails for sending and commit, before any provider call; return id -> attempt."""
    rows = db.session.execute(
        sa.update(Email)
        .where(which, _is_due(now))
        .values(send_state="claimed", send_claimed_at=now, send_attempts=Email.send_attempts + 1)
        .returning(Email.id, Email.send_attempts)
        .execution_options(synchronize_session=False)
    ).all()
    db.session.commit()
    return {row.id: row.send_attempts for row in rows}


def _send_claimed(claimed: dict[int, int], provider: EmailProvider, now: datetime) -> None:
    """Hand claimed emails to the provider in one batch and record what became of each."""
    if not claimed:
        return
    ids = sorted(claimed)
    emails = (
        db.session.execute(
            sa.select(Email)
            .where(Email.id.in_(ids))
            .options(so.joinedload(Email.client), so.joinedload(Email.clinic), so.selectinload(Email.content))
            .order_by(Email.id)
        )
        .scalars()
        .all()
    )
    # Nothing may stand between the claim's commit and the call: whatever happens here, the
    # claims are recorded and the sweeper settles them.
    results = provider.send_batch([_outgoing(email) for email in emails])
    if len(results) != len(emails):
        log.error("the provider answered %d of %d sends; the rest are in doubt", len(results), len(emails))
        results = [*results, *[SendResult("in_doubt", error="no answer")] * len(emails)][: len(emails)]
    by_id = {email.id: result for email, result in zip(emails, results, strict=True)}
    # Lock them again, in id order like every other writer, to record the answers.
    locked = db.session.execute(
        sa.select(Email)
        .where(Email.id.in_(ids))
        .order_by(Email.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalars()
    rate_limited: list[float] = []
    refused_key: str | None = None
    wake = False
    for email in locked:
        result = by_id[email.id]
        if email.send_state != "claimed" or email.send_attempts != claimed[email.id]:
            # The sweeper gave up waiting for this answer, or a webhook event proved the send.
            _record_late_answer(email, result)
        elif result.outcome == "accepted":
            mark_accepted(email, result.provider_message_id, result.accepted_at)
        elif result.outcome == "rejected":
            _mark_rejected(email, result.error or "refused by the email provider", result.reject_reason)
        elif result.outcome == "rate_limited":
            wait = result.retry_after or 60
            rate_limited.append(wait)
            _retry_later(email, timedelta(seconds=wait), result.error)
        elif result.outcome == "unauthorized":
            refused_key = result.error
            _retry_later(email, MAX_BACKOFF, result.error)
        elif result.outcome == "not_sent":  # never reached the provider
            _retry_later(email, timedelta(seconds=result.retry_after or 0), result.error)
            wake = wake or not result.retry_after
        else:  # unavailable or in_doubt: it may have arrived; ask before sending again
            _mark_in_doubt(email, now, result.error)
    if rate_limited:
        # The limit is the account's: every worker holds back, not only these emails.
        block_sends(max(rate_limited))
    if refused_key is not None:
        alerts.alert_operators(
            "provider_auth",
            f"The email provider refused our API key ({refused_key}). Emails stay queued; "
            f"check {getattr(provider, 'credentials_hint', EmailProvider.credentials_hint)}.",
        )
    elif any(result.outcome == "accepted" for result in by_id.values()):
        alerts.clear("provider_auth")  # the key works again
    db.session.commit()
    if wake:
        wake_senders()


def _record_late_answer(email: Email, result: SendResult) -> None:
    """Keep what an answer that came after we stopped waiting for it tells us."""
    if result.outcome == "accepted":
        if email.send_state in ("in_doubt", "queued", "held"):
            # The provider has it: the check, or the second attempt it led to, is not needed.
            mark_accepted(email, result.provider_message_id, result.accepted_at)
        elif email.send_state == "accepted" and not email.provider_message_id:
            email.provider_message_id = result.provider_message_id


def _mark_in_doubt(email: Email, now: datetime, error: str | None) -> None:
    email.send_state = "in_doubt"
    email.in_doubt_since = email.in_doubt_since or now
    email.send_error = error
    email.next_attempt_at = now + min(IN_DOUBT_RECHECK, in_doubt_grace())
    mark_changed(email)


def in_doubt_grace() -> timedelta:
    """How long after an attempt "not in the provider's records" may be taken to mean "not sent"."""
    return timedelta(seconds=current_app.config["IN_DOUBT_GRACE_SECONDS"])


def _outgoing(email: Email) -> OutgoingMessage:
    return OutgoingMessage(
        app_message_id=email.app_message_id,
        to_address=email.to_address,
        subject=email.subject,
        body_text=email.body,
        category=email.kind,
        **headers(email),
        **_content_fields(email.content),
    )


def headers(email: Email) -> dict[str, str]:
    """The From name and address and the To name the email is handed over with: those stored when
    it was queued, or today's for an email queued before they were stored (migration 0018)."""
    content = email.content
    if headers_stored(email):
        return {
            "from_name": content.from_name,
            "from_address": content.from_address,
            "to_name": content.to_name,
        }
    return headers_for(email.client, email.clinic)


def headers_stored(email: Email) -> bool:
    """Whether the email's From and To were stored when it was queued (every email since 0018)."""
    return email.content is not None and email.content.from_address is not None


def _content_fields(content: EmailContent | None) -> dict[str, Any]:
    """The HTML part, Reply-To and attachment stored when the email was composed (none: text only)."""
    if content is None:
        return {}
    attachments = ()
    if content.calendar_ics:
        ics = content.calendar_ics
        attachments = (Attachment("appointment.ics", calendar_file.content_type(ics), ics.encode()),)
    return {"body_html": content.body_html, "reply_to": content.reply_to, "attachments": attachments}


def mark_accepted(email: Email, provider_message_id: str | None, accepted_at: datetime | None = None) -> None:
    """Record that the provider took the email (from its answer, or from its records)."""
    if email.send_state in ("in_doubt", "held"):
        mark_changed(email)
    email.send_state = "accepted"
    email.in_doubt_since = None
    email.provider_message_id = provider_message_id
    email.send_error = None
    email.next_attempt_at = None
    schedule_next_poll(email, utcnow())
    if accepted_at is not None:
        # The provider's acceptance is its "processed" (Postmark): at its own time, so the copy its
        # Messages API shows later is the same event.
        processed = ProviderEvent(
            "processed",
            accepted_at,
            app_message_id=email.app_message_id,
            provider_message_id=provider_message_id,
        )
        apply_events(email, [processed], source="app")


def _mark_rejected(email: Email, error: str, reject_reason: RejectReason | None = None) -> None:
    email.send_state = "refused"
    email.send_error = error
    email.next_attempt_at = None
    rejected = ProviderEvent(
        "rejected", utcnow(), app_message_id=email.app_message_id, reason=error, reject_reason=reject_reason
    )
    apply_events(email, [rejected], source="app")


def _retry_later(email: Email, wait: timedelta, error: str | None) -> None:
    email.send_state = "queued"
    email.send_error = error
    email.next_attempt_at = utcnow() + wait
