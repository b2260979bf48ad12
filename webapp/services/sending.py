"""Sending email: queue it in the database, hand it to the provider exactly once.

The database row is the record that an email must be sent; Redis only wakes a worker up.
A send is claimed (and committed) before the provider is called, so a re-run job, a second
worker or the sweeper never sends it again. When we cannot tell whether the provider took a
message (a timeout, a server error), the email is "in doubt" and we ask the provider before
trying again: a missed email is visible in the log, a duplicate clinical email is not undoable.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from flask import current_app
from redis.exceptions import LockError, RedisError

from webapp.extensions import db
from webapp.models import Client, Email, OperatorAlert, SpamListEntry, User, utcnow
from webapp.providers import get_provider
from webapp.providers.base import (
    AcceptedResult,
    EmailProvider,
    OutgoingMessage,
    ProviderEvent,
    RejectReason,
    SendResult,
    SentRef,
)
from webapp.queue import enqueue
from webapp.services import audit
from webapp.services.addresses import correct_address
from webapp.services.changes import mark_changed, mark_logs_changed
from webapp.services.events import apply_events
from webapp.services.polling import (
    block,
    block_polling,
    blocked_until,
    give_back_budget,
    schedule_next_poll,
    take_budget,
)

log = logging.getLogger(__name__)

SEND_JOB = "jobs.sending.send_email"
MAX_BACKOFF = timedelta(minutes=10)
# The first look at the provider's records after a lost answer: most accepted sends show by then.
# Until IN_DOUBT_GRACE_SECONDS after the attempt, "not found" only means "not yet".
IN_DOUBT_RECHECK = timedelta(seconds=30)
# One check asks about at most this many batches (POLL_BATCH_SIZE emails each).
IN_DOUBT_REQUESTS_PER_CHECK = 3
IN_DOUBT_LOCK_KEY = "in-doubt-check-lock"
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
        + (f", resend of the email of {resend_of.created_at:%d %b %Y %H:%M} UTC" if resend_of else ""),
    )
    db.session.commit()
    enqueue(SEND_JOB, email.id, job_id=send_job_id(email.id))
    return email


def send_job_id(email_id: int) -> str:
    """Return the job id of an email's send: one such job waits or runs at a time."""
    return f"send-{email_id}"


def deliver(email_id: int, provider: EmailProvider | None = None) -> str:
    """Hand one queued email to the provider unless that already happened; return its send state."""
    now = utcnow()
    blocked = sends_blocked_until()
    if blocked is not None:
        return _wait_for_rate_limit(email_id, blocked)
    claimed = db.session.execute(
        sa.update(Email)
        .where(
            Email.id == email_id,
            Email.send_state == "queued",
            sa.or_(Email.next_attempt_at.is_(None), Email.next_attempt_at <= now),
        )
        .values(send_state="claimed", send_claimed_at=now, send_attempts=Email.send_attempts + 1)
        .returning(Email.send_attempts)
        .execution_options(synchronize_session=False)
    ).first()
    db.session.commit()
    email = db.session.get(Email, email_id)
    if claimed is None or email is None:
        return email.send_state if email else "missing"
    attempt = claimed.send_attempts
    provider = provider or get_provider(current_app.config)
    result = provider.send(_outgoing(email))
    db.session.refresh(email, with_for_update=True)
    if email.send_state != "claimed" or email.send_attempts != attempt:
        # The sweeper gave up waiting for this answer, or a webhook event proved the send.
        return _record_late_answer(email, result)
    if result.outcome == "accepted":
        _mark_accepted(email, result.provider_message_id, result.accepted_at)
    elif result.outcome == "rejected":
        _mark_rejected(email, result.error or "refused by the email provider", result.reject_reason)
    elif result.outcome == "rate_limited":
        wait = result.retry_after or 60
        # The limit is the account's: every worker holds back, not only this email.
        block_sends(wait)
        _retry_later(email, timedelta(seconds=wait), result.error)
    elif result.outcome == "unauthorized":
        _retry_later(email, MAX_BACKOFF, result.error)
        alert_operators(
            "provider_auth",
            f"The email provider refused our API key ({result.error}). Emails stay queued; "
            f"check {getattr(provider, 'credentials_hint', EmailProvider.credentials_hint)}.",
        )
    else:  # unavailable or in_doubt: it may have arrived; ask before sending again
        _mark_in_doubt(email, now, result.error)
    db.session.commit()
    return email.send_state


def _wait_for_rate_limit(email_id: int, until: float) -> str:
    """Leave a queued email until the account's rate limit resets, without asking the provider."""
    resume = datetime.fromtimestamp(until, UTC)
    db.session.execute(
        sa.update(Email)
        .where(
            Email.id == email_id,
            Email.send_state == "queued",
            sa.or_(Email.next_attempt_at.is_(None), Email.next_attempt_at < resume),
        )
        .values(next_attempt_at=resume, send_error="waiting for the email provider's rate limit to reset")
        .execution_options(synchronize_session=False)
    )
    db.session.commit()
    state = db.session.execute(sa.select(Email.send_state).where(Email.id == email_id)).scalar()
    return state or "missing"


def _record_late_answer(email: Email, result: SendResult) -> str:
    """Keep what an answer that came after we stopped waiting for it tells us."""
    if result.outcome == "accepted":
        if email.send_state in ("in_doubt", "queued"):
            # The provider has it: the check, or the second attempt it led to, is not needed.
            _mark_accepted(email, result.provider_message_id, result.accepted_at)
        elif email.send_state == "accepted" and not email.provider_message_id:
            email.provider_message_id = result.provider_message_id
    db.session.commit()
    return email.send_state


def _mark_in_doubt(email: Email, now: datetime, error: str | None) -> None:
    email.send_state = "in_doubt"
    email.in_doubt_since = email.in_doubt_since or now
    email.send_error = error
    email.next_attempt_at = now + min(IN_DOUBT_RECHECK, in_doubt_grace())
    mark_changed(email)


def in_doubt_grace() -> timedelta:
    """How long after an attempt "not in the provider's records" may be taken to mean "not sent"."""
    return timedelta(seconds=current_app.config["IN_DOUBT_GRACE_SECONDS"])


def check_in_doubt(provider: EmailProvider | None = None) -> int:
    """Ask the provider's records about in-doubt sends, many per request and within the shared
    activity budget; return how many were settled (accepted, or found unsent and queued again)."""
    redis = current_app.extensions["redis"]
    # Long enough for a check's requests to time out; short, so a killed checker blocks little.
    hold = IN_DOUBT_REQUESTS_PER_CHECK * current_app.config["SEND_TIMEOUT_SECONDS"] + 15
    try:
        lock = redis.lock(IN_DOUBT_LOCK_KEY, timeout=hold, blocking=False)
        if not lock.acquire():
            return 0  # another worker is checking these very emails
    except RedisError as error:
        log.warning("cannot check in-doubt sends without Redis: %s", error)
        return 0
    try:
        return _check_in_doubt(provider or get_provider(current_app.config), utcnow())
    finally:
        with contextlib.suppress(LockError, RedisError):  # it expires by itself
            lock.release()


def _check_in_doubt(provider: EmailProvider, now: datetime) -> int:
    batch_size = current_app.config["POLL_BATCH_SIZE"]
    emails = list(
        db.session.execute(
            sa.select(Email)
            .where(Email.send_state == "in_doubt", Email.next_attempt_at <= now)
            .order_by(Email.next_attempt_at, Email.id)
            .limit(batch_size * IN_DOUBT_REQUESTS_PER_CHECK)
        ).scalars()
    )
    if not emails:
        return 0
    unknown = [email for email in emails if not email.provider_message_id]
    answer = AcceptedResult(found={})
    if unknown:
        budget = take_budget(min(IN_DOUBT_REQUESTS_PER_CHECK, -(-len(unknown) // batch_size)))
        if budget:
            refs = [SentRef(email.app_message_id, email.to_address) for email in unknown]
            answer = provider.find_accepted(refs, budget)
            give_back_budget(budget - answer.requests_made)
        if answer.rate_limited_for:
            block_polling(answer.rate_limited_for)
        if answer.error:
            log.warning("checking in-doubt sends failed: %s", answer.error)
    settled: list[int] = []
    resend: list[int] = []
    grace = in_doubt_grace()
    # In id order, like the webhook job and the poller: concurrent writers lock rows in one order.
    for email in sorted(emails, key=lambda email: email.id):
        db.session.refresh(email, with_for_update=True)
        if email.send_state != "in_doubt":
            continue  # settled meanwhile by a webhook event or a late answer
        attempted_at = email.send_claimed_at or email.in_doubt_since or now
        if email.provider_message_id or email.app_message_id in answer.found:
            _mark_accepted(email, email.provider_message_id or answer.found.get(email.app_message_id))
            settled.append(email.id)
        elif email.app_message_id in answer.checked:
            if now - attempted_at >= grace:
                # Long enough for the provider's records to show it: it never arrived.
                email.send_state = "queued"
                email.next_attempt_at = now
                email.send_error = "the email provider has no record of it; sending it again"
                mark_changed(email)
                settled.append(email.id)
                resend.append(email.id)
            else:
                email.next_attempt_at = attempted_at + grace
        elif answer.error:
            email.next_attempt_at = now + IN_DOUBT_RECHECK  # the provider is failing: do not hammer it
        # Otherwise the budget or a rate limit stopped us first: it keeps its turn at the head.
    db.session.commit()
    for email_id in resend:
        enqueue(SEND_JOB, email_id, job_id=send_job_id(email_id))
    return len(settled)


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


def _mark_accepted(
    email: Email, provider_message_id: str | None, accepted_at: datetime | None = None
) -> None:
    if email.send_state == "in_doubt":
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


def alert_operators(kind: str, message: str, email: Email | None = None) -> None:
    """Record an alert once while it is open, and log it for whoever watches the logs."""
    email_id = email.id if email else None
    open_alert = db.session.execute(
        sa.select(OperatorAlert.id).where(
            OperatorAlert.kind == kind,
            OperatorAlert.resolved_at.is_(None),
            OperatorAlert.email_id.is_(email_id) if email_id is None else OperatorAlert.email_id == email_id,
        )
    ).first()
    log.error("operator alert %s: %s", kind, message)
    if open_alert is None:
        db.session.add(OperatorAlert(kind=kind, message=message, email_id=email_id))


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
