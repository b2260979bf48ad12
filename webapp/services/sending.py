"""Sending email: queue it in the database, hand it to the provider exactly once.

The database row is the record that an email must be sent; Redis only wakes a worker up.
A send is claimed (and committed) before the provider is called, so a re-run job, a second
worker or the sweeper never sends it again. When we cannot tell whether the provider took a
message (a timeout, a server error), the email is "in doubt" and we ask the provider before
trying again: a missed email is visible in the log, a duplicate clinical email is not undoable.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from flask import current_app

from webapp.extensions import db
from webapp.models import Client, Email, OperatorAlert, SpamListEntry, User, utcnow
from webapp.providers import get_provider
from webapp.providers.base import EmailProvider, OutgoingMessage, ProviderError, ProviderEvent, SendResult
from webapp.queue import enqueue
from webapp.services import audit
from webapp.services.events import apply_events
from webapp.services.polling import schedule_next_poll

log = logging.getLogger(__name__)

SEND_JOB = "jobs.sending.send_email"
MAX_BACKOFF = timedelta(minutes=10)
# How long we wait before asking the provider whether an in-doubt send arrived, and how long
# its activity records may lag behind: only after that does "not found" mean "not sent".
IN_DOUBT_RECHECK = timedelta(seconds=30)
IN_DOUBT_GRACE = timedelta(minutes=5)


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
        detail=f"to client {client.id}" + (f", resend of email {resend_of.id}" if resend_of else ""),
    )
    db.session.commit()
    enqueue(SEND_JOB, email.id)
    return email


def deliver(email_id: int, provider: EmailProvider | None = None) -> str:
    """Hand one queued email to the provider unless that already happened; return its send state."""
    now = utcnow()
    claimed = db.session.execute(
        sa.update(Email)
        .where(
            Email.id == email_id,
            Email.send_state.in_(("queued", "in_doubt")),
            sa.or_(Email.next_attempt_at.is_(None), Email.next_attempt_at <= now),
        )
        .values(send_state="sending", send_claimed_at=now, send_attempts=Email.send_attempts + 1)
        .returning(Email.send_state)
        .execution_options(synchronize_session=False)
    ).first()
    db.session.commit()
    email = db.session.get(Email, email_id)
    if claimed is None or email is None:
        return email.send_state if email else "missing"
    provider = provider or get_provider(current_app.config)
    if email.in_doubt_since is not None and _resolve_doubt(email, provider, now):
        db.session.commit()
        return email.send_state
    result = provider.send(_outgoing(email))
    db.session.refresh(email)
    if email.send_state != "sending":
        # A webhook event arrived during the call and proved the provider took it.
        return _record_late_answer(email, result)
    if result.outcome == "accepted":
        _mark_accepted(email, result.provider_message_id)
    elif result.outcome == "rejected":
        _mark_rejected(email, result.error or "refused by the email provider")
    elif result.outcome == "rate_limited":
        _retry_later(email, "queued", timedelta(seconds=result.retry_after or 60), result.error)
    elif result.outcome == "unauthorized":
        _retry_later(email, "queued", MAX_BACKOFF, result.error)
        alert_operators(
            "provider_auth",
            f"The email provider refused our API key ({result.error}). Emails stay queued; "
            "check SENDGRID_API_KEY and its Mail Send permission.",
        )
    else:  # unavailable or in_doubt: it may have arrived; ask before sending again
        email.in_doubt_since = email.in_doubt_since or now
        _retry_later(email, "in_doubt", IN_DOUBT_RECHECK, result.error)
    db.session.commit()
    return email.send_state


def _record_late_answer(email: Email, result: SendResult) -> str:
    if result.outcome == "accepted" and not email.provider_message_id:
        email.provider_message_id = result.provider_message_id
    db.session.commit()
    return email.send_state


def _resolve_doubt(email: Email, provider: EmailProvider, now: datetime) -> bool:
    """Find out whether an earlier attempt arrived; return True when we must not send now."""
    if email.provider_message_id:
        _mark_accepted(email, email.provider_message_id)
        return True
    try:
        found = provider.find_accepted(email.app_message_id)
    except ProviderError as error:
        _retry_later(email, "in_doubt", timedelta(seconds=error.retry_after or 60), str(error))
        return True
    if found:
        _mark_accepted(email, found)
        return True
    if now - email.in_doubt_since < IN_DOUBT_GRACE:
        _retry_later(email, "in_doubt", IN_DOUBT_RECHECK, "waiting for the provider's records")
        return True
    return False


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


def _mark_accepted(email: Email, provider_message_id: str | None) -> None:
    email.send_state = "accepted"
    email.in_doubt_since = None
    email.provider_message_id = provider_message_id
    email.send_error = None
    email.next_attempt_at = None
    schedule_next_poll(email, utcnow())


def _mark_rejected(email: Email, error: str) -> None:
    email.send_state = "failed"
    email.send_error = error
    email.next_attempt_at = None
    rejected = ProviderEvent("rejected", utcnow(), app_message_id=email.app_message_id, reason=error)
    apply_events(email, [rejected], source="app")


def _retry_later(email: Email, state: str, wait: timedelta, error: str | None) -> None:
    backoff = min(MAX_BACKOFF, timedelta(seconds=5 * 2 ** min(email.send_attempts, 10)))
    email.send_state = state
    email.send_error = error
    email.next_attempt_at = utcnow() + max(wait, backoff if state == "in_doubt" else wait)


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
    """Return ids of emails whose send is due again (lost job, retry time reached)."""
    grace = now - timedelta(seconds=15)
    return list(
        db.session.execute(
            sa.select(Email.id)
            .where(
                Email.send_state.in_(("queued", "in_doubt")),
                sa.or_(
                    Email.next_attempt_at <= now,
                    sa.and_(Email.next_attempt_at.is_(None), Email.created_at <= grace),
                ),
            )
            .order_by(Email.id)
            .limit(limit)
        ).scalars()
    )


def recover_abandoned_sends(now: datetime, after: timedelta = timedelta(minutes=5)) -> int:
    """Put sends whose worker died mid-call in doubt, so they are checked, not blindly resent."""
    result = db.session.execute(
        sa.update(Email)
        .where(Email.send_state == "sending", Email.send_claimed_at <= now - after)
        .values(send_state="in_doubt", next_attempt_at=now, in_doubt_since=Email.send_claimed_at)
        .execution_options(synchronize_session=False)
    )
    db.session.commit()
    return result.rowcount or 0


def resend(original: Email, *, to_address: str, update_client: bool, by: User | None) -> Email:
    """Queue a copy of a failed email, optionally saving a corrected address in the client file."""
    # Lock the original so two confirmations (a double click) cannot both resend it.
    db.session.execute(sa.select(Email.id).where(Email.id == original.id).with_for_update())
    if db.session.execute(sa.select(Email.id).where(Email.resend_of_id == original.id)).first():
        raise SendRefused("this email has already been resent")
    client = original.client
    address = to_address.strip()
    if update_client and address.lower() != client.email.strip().lower():
        audit.record(
            "client.update_email",
            by,
            clinic_id=client.clinic_id,
            subject_type="client",
            subject_id=client.id,
            detail="address corrected before a resend",
        )
        client.email = address
    return queue_email(
        client,
        kind=original.kind,
        subject=original.subject,
        body=original.body,
        sent_by=by,
        to_address=address,
        resend_of=original,
    )
