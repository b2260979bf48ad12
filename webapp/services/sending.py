"""Sending email: queue it in the database, hand it to the provider exactly once.

The database row is the record that an email must be sent; Redis only wakes a worker up.
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

import contextlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
import sqlalchemy.orm as so
from flask import current_app
from redis.exceptions import RedisError

from webapp import timezones
from webapp.extensions import db
from webapp.freshness.counters import mark_changed, mark_logs_changed
from webapp.models import Client, Email, SpamListEntry, User, utcnow
from webapp.providers import get_provider
from webapp.providers.base import EmailProvider, OutgoingMessage, ProviderEvent, RejectReason, SendResult
from webapp.queue import enqueue
from webapp.services import alerts, audit
from webapp.services.addresses import correct_address
from webapp.services.alerts import alert_operators  # noqa: F401 (raisers of alerts import it from here too)
from webapp.services.budget import block, blocked_until
from webapp.services.events import apply_events
from webapp.services.polling import schedule_next_poll

log = logging.getLogger(__name__)

SEND_JOB = "jobs.sending.send_due"
# Set while a send job waits that has not yet looked for due emails: whoever queues an email
# meanwhile need not queue another job (that one will see it). A job clears it as it starts; the
# expiry only bounds how long a job lost before starting holds back new ones (the sweeper's own
# job does not wait for it).
SEND_WAKE_KEY = "send-wake-pending"
SEND_WAKE_TTL = 60
SWEEP_SEND_JOB_ID = "send-sweep"
MAX_BACKOFF = timedelta(minutes=10)
# The first look at the provider's records after a lost answer: most accepted sends show by then.
# Until IN_DOUBT_GRACE_SECONDS after the attempt, "not found" only means "not yet".
IN_DOUBT_RECHECK = timedelta(seconds=30)
SEND_BLOCK_KEY = "send-blocked-until"


@dataclass
class SendRefused(Exception):
    """The email must not be sent; the reason is for the clinician."""

    reason: str
    spam_entry: SpamListEntry | None = None
    # Whether the spam report was about this clinic's own email. The spam list is shared by all
    # clinics: another clinic's report (whether and when there was one) is not this clinic's business.
    own_report: bool = False


def spam_list_entry(address: str) -> SpamListEntry | None:
    """Return the spam-list entry of an address, if the client reported spam from it."""
    return db.session.execute(
        sa.select(SpamListEntry).where(SpamListEntry.address == address.strip().lower())
    ).scalar_one_or_none()


def queue_email(
    client: Client,
    *,
    kind: str,
    subject: str,
    body: str,
    sent_by: User | None,
    to_address: str | None = None,
    resend_of: Email | None = None,
    appointment_at: datetime | None = None,
) -> Email:
    """Record a new email in Sending and enqueue its send; refuse addresses on the spam list."""
    address = (to_address or client.email).strip()
    entry = spam_list_entry(address)
    if entry is not None:
        if entry.email is not None and entry.email.clinic_id == client.clinic_id:
            reason = f"{address} is on the spam list: the client reported an earlier email as spam"
            raise SendRefused(reason, entry, own_report=True)
        raise SendRefused(f"{address} is blocked: our email provider does not deliver to it", entry)
    email = Email(
        clinic_id=client.clinic_id,
        client_id=client.id,
        to_address=address,
        subject=subject,
        body=body,
        kind=kind,
        provider=current_app.config["EMAIL_PROVIDER"],
        sent_by_id=sent_by.id if sent_by else None,
        resend_of_id=resend_of.id if resend_of else None,
        appointment_at=appointment_at,
        created_at=utcnow(),
    )
    db.session.add(email)
    db.session.flush()
    # Whole seconds, like the provider's own timestamps, so the timeline sorts naturally.
    queued = ProviderEvent(
        "sending", email.created_at.replace(microsecond=0), app_message_id=email.app_message_id
    )
    apply_events(email, [queued], source="app")
    audit.record(
        "email.resend" if resend_of else "email.send",
        sent_by,
        clinic_id=client.clinic_id,
        subject_type="email",
        subject_id=email.id,
        # Names, not ids: the trail is read by people, and outlives the email (retention).
        detail=f"“{subject}” to {client.name} <{address}>"
        + (f", resend of the email of {timezones.utc_stamp(resend_of.created_at)}" if resend_of else ""),
    )
    db.session.commit()
    wake_senders()
    return email


def wake_senders() -> bool:
    """Make sure a send job looks for due emails after now; False (and a log line) without Redis.

    Call it after committing the emails: a job that has not started yet will see them, so while
    one waits no other is queued (a burst of 10,000 emails queues a handful of jobs, not 10,000).
    """
    try:
        if not current_app.extensions["redis"].set(SEND_WAKE_KEY, "1", nx=True, ex=SEND_WAKE_TTL):
            return True
    except RedisError as error:
        log.warning("could not wake a sender: %s", error)
        return False  # the sweeper finds the due emails
    if enqueue(SEND_JOB):
        return True
    with contextlib.suppress(RedisError):
        current_app.extensions["redis"].delete(SEND_WAKE_KEY)
    return False


def _clear_wake() -> None:
    """Say that this job is about to look for due emails (so the next email queues a new job)."""
    try:
        current_app.extensions["redis"].delete(SEND_WAKE_KEY)
    except RedisError as error:
        log.warning("could not clear the sender wake-up mark: %s", error)


def deliver_due(provider: EmailProvider | None = None) -> int:
    """Claim up to one batch of due emails, hand them over in one batch, record each result;
    return how many were claimed."""
    _clear_wake()
    now = utcnow()
    blocked = sends_blocked_until()
    if blocked is not None:
        _wait_for_rate_limit(sa.true(), blocked)
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
        _wait_for_rate_limit(Email.id == email_id, blocked)
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
            .options(so.joinedload(Email.client), so.joinedload(Email.clinic))
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


def _wait_for_rate_limit(which: sa.ColumnElement[bool], until: float) -> None:
    """Leave queued emails until the account's rate limit resets, without asking the provider."""
    resume = datetime.fromtimestamp(until, UTC)
    db.session.execute(
        sa.update(Email)
        .where(
            which,
            Email.send_state == "queued",
            sa.or_(Email.next_attempt_at.is_(None), Email.next_attempt_at < resume),
        )
        .values(next_attempt_at=resume, send_error="waiting for the email provider's rate limit to reset")
        .execution_options(synchronize_session=False)
    )
    db.session.commit()


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


def block_sends(seconds: float) -> None:
    """Hold back every send for a while: the provider's rate limit is the account's."""
    try:
        block(SEND_BLOCK_KEY, seconds)
    except RedisError as error:
        log.warning("could not share the email provider's rate limit: %s", error)


def sends_blocked_until() -> float | None:
    """Return until when the provider's rate limit holds every send back, or None."""
    try:
        return blocked_until(SEND_BLOCK_KEY)
    except RedisError as error:
        log.warning("cannot read the email provider's rate limit: %s", error)
        return None


def _outgoing(email: Email) -> OutgoingMessage:
    config = current_app.config
    return OutgoingMessage(
        app_message_id=email.app_message_id,
        to_address=email.to_address,
        to_name=email.client.name,
        from_address=config["MAIL_FROM_ADDRESS"],
        from_name=config["MAIL_FROM_NAME"] or email.clinic.name,
        subject=email.subject,
        body_text=email.body,
        category=email.kind,
    )


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


def due_sends(now: datetime, limit: int = 500) -> list[int]:
    """Return ids of emails whose send is due (a lost job, a retry time reached)."""
    if sends_blocked_until() is not None:
        return []  # the provider's rate limit: their jobs would only wait
    # A new email's own job is on its way; queuing it again is harmless (one send-<id> job waits
    # at a time), so this only saves the sweeper some work.
    grace = now - timedelta(seconds=5)
    return list(
        db.session.execute(
            sa.select(Email.id)
            .where(
                Email.send_state == "queued",
                sa.or_(
                    Email.next_attempt_at <= now,
                    sa.and_(Email.next_attempt_at.is_(None), Email.created_at <= grace),
                ),
            )
            .order_by(Email.id)
            .limit(limit)
        ).scalars()
    )


def wake_for_due(now: datetime) -> int:
    """Queue the sweeper's send job when emails are due (a lost job, a retry time reached); return
    how many are due. Its own job id: sweeps never queue two, and a lost wake-up mark never stops it."""
    due = due_sends(now)
    if due:
        enqueue(SEND_JOB, job_id=SWEEP_SEND_JOB_ID)
    return len(due)


def recover_abandoned_sends(now: datetime) -> int:
    """Put sends whose worker died mid-call in doubt, so they are checked, not blindly resent."""
    after = timedelta(seconds=current_app.config["SEND_ABANDONED_SECONDS"])
    recovered = db.session.execute(
        sa.update(Email)
        .where(Email.send_state == "claimed", Email.send_claimed_at <= now - after)
        .values(
            send_state="in_doubt",
            next_attempt_at=now,
            # Since the first attempt we could not account for, however many died after it.
            in_doubt_since=sa.func.coalesce(Email.in_doubt_since, Email.send_claimed_at),
            send_error="the worker sending it stopped before the provider answered",
            version=Email.version + 1,
        )
        .returning(Email.clinic_id, Email.client_id)
        .execution_options(synchronize_session=False)
    ).all()
    mark_logs_changed(db.session, [(row.clinic_id, row.client_id) for row in recovered])
    db.session.commit()
    return len(recovered)


def resend(original: Email, *, to_address: str, update_client: bool, by: User | None) -> Email:
    """Queue a copy of an email (failed, or delivered but never found by the client), optionally
    saving a corrected address in the client file."""
    # Lock the original so two confirmations (a double click) cannot both resend it.
    db.session.execute(sa.select(Email.id).where(Email.id == original.id).with_for_update())
    if db.session.execute(sa.select(Email.id).where(Email.resend_of_id == original.id)).first():
        raise SendRefused("this email has already been resent")
    client = original.client
    address = to_address.strip()
    if update_client and address.lower() != client.email.strip().lower():
        correct_address(client, address, by, "before a resend")
    return queue_email(
        client,
        kind=original.kind,
        subject=original.subject,
        body=original.body,
        sent_by=by,
        to_address=address,
        resend_of=original,
        appointment_at=original.appointment_at,
    )
