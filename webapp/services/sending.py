"""Composing email: record it in the database and wake a sender; refuse spam-listed addresses.

The database row is the record that an email must be sent; Redis only wakes a worker up. Handing
it to the provider exactly once is webapp/services/handover.py; the sweeper's catch-up of lost jobs
and dead workers is webapp/services/send_sweep.py.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from flask import current_app
from redis.exceptions import RedisError

from webapp import timezones
from webapp.extensions import db
from webapp.models import Client, Clinic, Email, EmailContent, SpamListEntry, User, utcnow
from webapp.providers.base import ProviderEvent
from webapp.queue import enqueue
from webapp.redis_keys import redis_key
from webapp.services import audit, email_content
from webapp.services.addresses import correct_address
from webapp.services.events import apply_events

log = logging.getLogger(__name__)

SEND_JOB = "jobs.sending.send_due"
# Set while a send job waits that has not yet looked for due emails: whoever queues an email
# meanwhile need not queue another job (that one will see it). A job clears it as it starts; the
# expiry only bounds how long a job lost before starting holds back new ones (the sweeper's own
# job does not wait for it).
SEND_WAKE_KEY = "send-wake-pending"
SEND_WAKE_TTL = 60


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
    content: EmailContent | None = None,
    app_message_id: str | None = None,
) -> Email:
    """Record a new email in Sending and enqueue its send; refuse addresses on the spam list.

    `content` is the rest of what the provider is handed (HTML part, Reply-To, calendar file),
    stored with the email in the same transaction; without it the email is text only. Either way
    the email's From and To names are fixed here, from today's settings and names, and stored with
    it: handover sends those and the copy as sent shows them (a resend fixes its own)."""
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
    if app_message_id:
        email.app_message_id = app_message_id
    content = content or EmailContent(body_html="", reply_to="", calendar_ics=None)
    for header, value in headers_for(client, db.session.get(Clinic, client.clinic_id)).items():
        setattr(content, header, value)
    email.content = content
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
        if not current_app.extensions["redis"].set(redis_key(SEND_WAKE_KEY), "1", nx=True, ex=SEND_WAKE_TTL):
            return True
    except RedisError as error:
        log.warning("could not wake a sender: %s", error)
        return False  # the sweeper finds the due emails
    if enqueue(SEND_JOB):
        return True
    with contextlib.suppress(RedisError):
        current_app.extensions["redis"].delete(redis_key(SEND_WAKE_KEY))
    return False


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
        # What was sent is what is resent: the same HTML, Reply-To and calendar event (its UID
        # too, so a calendar updates the event it has rather than adding a second one).
        content=_copy(original.content),
    )


def _copy(content: EmailContent | None) -> EmailContent | None:
    if content is None:
        return None
    return EmailContent(
        body_html=content.body_html, reply_to=content.reply_to, calendar_ics=content.calendar_ics
    )


def headers_for(client: Client, clinic: Clinic) -> dict[str, str]:
    """The From name and address and the To name an email to this client gets today (the To's
    address is the email's own); named as OutgoingMessage's and EmailContent's fields."""
    config = current_app.config
    return {
        "from_name": config["MAIL_FROM_NAME"] or clinic.name,
        "from_address": config["MAIL_FROM_ADDRESS"],
        "to_name": client.name,
    }


def calendar_uid(app_message_id: str) -> str:
    """The UID of an email's calendar event: globally unique, and the same for its resends."""
    domain = current_app.config["MAIL_FROM_ADDRESS"].rpartition("@")[2] or "localhost"
    return f"{app_message_id}@{domain}"


def render_for(
    client: Client, clinic: Clinic, kind: str, compose: email_content.Compose, app_message_id: str = ""
) -> email_content.RenderedEmail:
    """Make the email of this kind for the client, as it will be sent (the preview calls this too)."""
    message_id = app_message_id or str(uuid.uuid4())
    return email_content.render(kind, client, clinic, compose, uid=calendar_uid(message_id), now=utcnow())


def send_composed(
    client: Client, clinic: Clinic, kind: str, compose: email_content.Compose, *, sent_by: User | None
) -> Email:
    """Make the email the clinician composed and queue it, its HTML part and calendar file stored
    with it; raise email_content.CannotCompose or SendRefused with the reason."""
    message_id = str(uuid.uuid4())
    rendered = render_for(client, clinic, kind, compose, message_id)
    return queue_email(
        client,
        kind=kind,
        subject=rendered.subject,
        body=rendered.body_text,
        sent_by=sent_by,
        appointment_at=compose.appointment_at,
        content=EmailContent(
            body_html=rendered.body_html, reply_to=rendered.reply_to, calendar_ics=rendered.calendar_ics
        ),
        app_message_id=message_id,
    )
