"""Database models. Services are the only code that writes them."""

from __future__ import annotations

import uuid
from datetime import datetime

import sqlalchemy as sa
import sqlalchemy.orm as so
from flask_login import UserMixin
from sqlalchemy.ext.hybrid import hybrid_property
from werkzeug.security import generate_password_hash

from webapp import clock
from webapp.column_types import Digest, JSONType, UTCDateTime
from webapp.extensions import db


def utcnow() -> datetime:
    """Return the current time, timezone-aware, in UTC."""
    return clock.now()


ROLES = ("clinician", "owner", "support")
MESSAGE_KINDS = {
    "appointment_reminder": "Appointment reminder",
    "intake_form": "Intake form",
    "receipt": "Receipt",
    "free_text": "Custom message",  # written by the clinician; the others have a ready-made text
}
# The kinds that can carry the time of the appointment they are for.
APPOINTMENT_KINDS = ("appointment_reminder", "intake_form")


def _naming_an_email(name: str) -> sa.Index:
    """An index of the rows that name an email: the foreign key's check when the purge deletes one."""
    where = sa.text("email_id IS NOT NULL")
    return sa.Index(name, "email_id", postgresql_where=where, sqlite_where=where)


class Clinic(db.Model):
    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    name: so.Mapped[str] = so.mapped_column(sa.String(200))
    created_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime, default=utcnow)
    # IANA name (Europe/London): the clinic's times, appointments above all, are read in it.
    timezone: so.Mapped[str] = so.mapped_column(sa.String(64), default="UTC", server_default="UTC")
    # The clinic's identity, set by its owner: every email carries it (Reply-To header, footer), so
    # replies reach the clinic, not the platform. Empty: not given.
    reply_to_address: so.Mapped[str] = so.mapped_column(sa.String(320), default="", server_default="")
    phone: so.Mapped[str] = so.mapped_column(sa.String(50), default="", server_default="")
    postal_address: so.Mapped[str] = so.mapped_column(sa.String(500), default="", server_default="")
    brand_colour: so.Mapped[str] = so.mapped_column(sa.String(7), default="", server_default="")  # #rrggbb
    intake_form_url: so.Mapped[str] = so.mapped_column(sa.String(500), default="", server_default="")


class User(UserMixin, db.Model):
    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    # Support staff work for the platform, not for a clinic.
    clinic_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("clinic.id"), index=True)
    email: so.Mapped[str] = so.mapped_column(sa.String(320), unique=True)
    name: so.Mapped[str] = so.mapped_column(sa.String(200))
    role: so.Mapped[str] = so.mapped_column(sa.String(20))
    password_hash: so.Mapped[str] = so.mapped_column(sa.String(300))
    active: so.Mapped[bool] = so.mapped_column(default=True)
    created_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime, default=utcnow)

    clinic: so.Mapped[Clinic | None] = so.relationship()

    def set_password(self, password: str, method: str = "scrypt") -> None:
        """Store a salted hash of the password, never the password."""
        self.password_hash = generate_password_hash(password, method=method)

    @property
    def is_active(self) -> bool:
        return self.active


class UserSession(db.Model):
    """A signed-in session, so that ending it on the server ends it at once, cookie copies too."""

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    # sha256 of the session's random id (the cookie holds the id itself, signed).
    sid_hash: so.Mapped[str] = so.mapped_column(sa.String(64), unique=True)
    user_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("user.id"), index=True)
    created_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime, default=utcnow)
    ended_at: so.Mapped[datetime | None] = so.mapped_column(UTCDateTime)


class Client(db.Model):
    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    clinic_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("clinic.id"), index=True)
    name: so.Mapped[str] = so.mapped_column(sa.String(200))
    email: so.Mapped[str] = so.mapped_column(sa.String(320))
    phone: so.Mapped[str] = so.mapped_column(sa.String(50), default="")
    created_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime, default=utcnow)


class Email(db.Model):
    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    clinic_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("clinic.id"), index=True)
    client_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("client.id"))
    # Our own id; it travels to the provider in custom_args so events find their email.
    app_message_id: so.Mapped[str] = so.mapped_column(
        sa.String(36), unique=True, default=lambda: str(uuid.uuid4())
    )
    to_address: so.Mapped[str] = so.mapped_column(sa.String(320))  # the address used at send time
    subject: so.Mapped[str] = so.mapped_column(sa.String(300))
    body: so.Mapped[str] = so.mapped_column(sa.Text)
    kind: so.Mapped[str] = so.mapped_column(sa.String(40))
    status: so.Mapped[str] = so.mapped_column(sa.String(20), default="sending")
    status_changed_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime, default=utcnow)
    # When we received the event that gave the current status, by our own clock (None: not known,
    # count from status_changed_at). Stuck and in-doubt decisions count from it, never from the
    # provider's event time, which a skewed clock may put hours away.
    status_received_at: so.Mapped[datetime | None] = so.mapped_column(UTCDateTime)
    created_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime, default=utcnow)
    # Bumped whenever anything shown about this email changes (status or timeline).
    version: so.Mapped[int] = so.mapped_column(default=0)
    provider: so.Mapped[str] = so.mapped_column(sa.String(20))
    # SendGrid's X-Message-Id: it names the API call; per-recipient ids start with it.
    provider_message_id: so.Mapped[str | None] = so.mapped_column(sa.String(200), index=True)
    # Our side of the handover, in words apart from the statuses': queued (waiting for a worker) ->
    # claimed (a worker is calling the provider) -> accepted (the provider took it) | refused (it
    # never will); in_doubt when we cannot tell whether the provider took it (see services/handover.py).
    send_state: so.Mapped[str] = so.mapped_column(sa.String(20), default="queued")
    send_attempts: so.Mapped[int] = so.mapped_column(default=0)
    send_claimed_at: so.Mapped[datetime | None] = so.mapped_column(UTCDateTime)
    next_attempt_at: so.Mapped[datetime | None] = so.mapped_column(UTCDateTime, index=True)
    # Since when we cannot tell whether the provider took it (timeout, server error, dead worker).
    in_doubt_since: so.Mapped[datetime | None] = so.mapped_column(UTCDateTime)
    # Times it was handed over again because the provider's records did not show the handover
    # before: at most once; then it is held (send_state "held"), never sent a third time.
    resends_unfound: so.Mapped[int] = so.mapped_column(default=0, server_default="0")
    send_error: so.Mapped[str | None] = so.mapped_column(sa.Text)
    next_poll_at: so.Mapped[datetime | None] = so.mapped_column(UTCDateTime, index=True)
    last_polled_at: so.Mapped[datetime | None] = so.mapped_column(UTCDateTime)
    resend_of_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("email.id"))
    sent_by_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("user.id"))
    stuck_alerted_at: so.Mapped[datetime | None] = so.mapped_column(UTCDateTime)
    # The appointment a reminder or intake form is for: at risk if it does not arrive in time.
    appointment_at: so.Mapped[datetime | None] = so.mapped_column(UTCDateTime, index=True)
    # A clinician dealt with it another way (called the client): off the Needs attention page.
    handled_at: so.Mapped[datetime | None] = so.mapped_column(UTCDateTime)
    handled_by_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("user.id"))

    clinic: so.Mapped[Clinic] = so.relationship()
    client: so.Mapped[Client] = so.relationship()
    resend_of: so.Mapped[Email | None] = so.relationship(remote_side=[id])
    sent_by: so.Mapped[User | None] = so.relationship(foreign_keys=[sent_by_id])
    handled_by: so.Mapped[User | None] = so.relationship(foreign_keys=[handled_by_id])
    events: so.Mapped[list[EmailEvent]] = so.relationship(
        back_populates="email",
        primaryjoin="Email.id == foreign(EmailEvent.email_id)",
        order_by="EmailEvent.occurred_at, EmailEvent.id",
    )
    # What was handed to the provider beyond the subject, To address and text part (Email.body):
    # every email queued since migration 0018 has one (its From and To names), a text-only one with
    # no HTML part. Loaded only when asked for: the log's queries never need it.
    content: so.Mapped[EmailContent | None] = so.relationship(
        back_populates="email",
        uselist=False,
        lazy="select",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )

    __table_args__ = (
        sa.Index("ix_email_client_created", "client_id", "created_at"),
        # A clinic's emails by the address they went to (the client list's spam-report check).
        sa.Index("ix_email_clinic_lower_to_address", "clinic_id", sa.func.lower(sa.text("to_address"))),
        sa.Index("ix_email_created_at", "created_at"),  # the retention purge
        # The owner's view. Not with status (migration 0017): an indexed status made every status
        # change write a new entry in each of the table's indexes instead of one row version.
        sa.Index("ix_email_clinic_created", "clinic_id", "created_at"),
        # An email's resends (the "already resent?" checks, the foreign key's check when the purge
        # deletes an email). Only resends are in it: a status change stays a HOT update.
        sa.Index(
            "ix_email_resend_of_id",
            "resend_of_id",
            postgresql_where=sa.text("resend_of_id IS NOT NULL"),
            sqlite_where=sa.text("resend_of_id IS NOT NULL"),
        ),
    )

    @property
    def reference(self) -> str:
        """The short name support knows this email by (its alerts and timeline page show it)."""
        return f"E-{self.id}"

    @hybrid_property
    def status_known_at(self) -> datetime:
        """Since when we know of its current status, by our own clock: what "stuck" counts from."""
        return self.status_received_at or self.status_changed_at

    @status_known_at.inplace.expression
    @classmethod
    def _status_known_at(cls) -> sa.ColumnElement[datetime]:
        return sa.func.coalesce(cls.status_received_at, cls.status_changed_at)


class EmailContent(db.Model):
    """The rest of an email exactly as handed to the provider: its From and To names, HTML part,
    Reply-To and calendar attachment. A table of its own so the hot email rows stay small."""

    email_id: so.Mapped[int] = so.mapped_column(
        sa.ForeignKey("email.id", ondelete="CASCADE"), primary_key=True
    )
    body_html: so.Mapped[str] = so.mapped_column(sa.Text, default="")  # empty: text only
    reply_to: so.Mapped[str] = so.mapped_column(sa.String(320), default="")
    # The appointment's .ics (text/calendar), for a reminder; None when there is no attachment.
    calendar_ics: so.Mapped[str | None] = so.mapped_column(sa.Text)
    # The From and To as handed over (the To's address is Email.to_address), fixed when the email is
    # queued: handover sends these, the copy as sent shows them, whatever the clinic or client is
    # called later. None: queued before migration 0018, sent with names read at the send.
    from_name: so.Mapped[str | None] = so.mapped_column(sa.Text)
    from_address: so.Mapped[str | None] = so.mapped_column(sa.String(320))
    to_name: so.Mapped[str | None] = so.mapped_column(sa.Text)

    email: so.Mapped[Email] = so.relationship(back_populates="content")


class EmailEvent(db.Model):
    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    # Indexed by the unique (email_id, dedupe_key) key, which also serves lookups by email. No
    # foreign key (migration 0017): writers hold the email's row lock, and the check cost a third
    # of storing a batch's events.
    email_id: so.Mapped[int] = so.mapped_column()
    occurred_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime)
    kind: so.Mapped[str] = so.mapped_column(sa.String(30))
    reason: so.Mapped[str | None] = so.mapped_column(sa.Text)  # bounce/drop/deferral text
    # Why the provider would not send (dropped, rejected), in our words: reject_reasons.REJECT_REASONS.
    reject_reason: so.Mapped[str | None] = so.mapped_column(sa.String(20))
    url: so.Mapped[str | None] = so.mapped_column(sa.Text)  # clicked link
    attempt: so.Mapped[int | None] = so.mapped_column()  # deferral attempt number
    machine: so.Mapped[bool] = so.mapped_column(default=False)  # provider says: machine open
    source: so.Mapped[str] = so.mapped_column(sa.String(20))  # app, webhook, poll
    raw: so.Mapped[dict | None] = so.mapped_column(JSONType)
    # Stable across sources and retries, so a repeated event is stored once: the first 16 bytes of
    # ProviderEvent.dedupe_key (events.stored_key), unique per email. Keyed by email first, the index
    # pages a batch writes are those of its (mostly recent) emails, not random pages of all history.
    dedupe_key: so.Mapped[str] = so.mapped_column(Digest)
    created_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime, default=utcnow)

    email: so.Mapped[Email] = so.relationship(
        back_populates="events", primaryjoin="Email.id == foreign(EmailEvent.email_id)"
    )

    __table_args__ = (
        sa.UniqueConstraint("email_id", "dedupe_key", name="uq_email_event_email_id_dedupe_key"),
        sa.Index("ix_email_event_created_at", "created_at"),  # the operator's view
    )


class SpamListEntry(db.Model):
    """Our copy of the provider's spam-report list: sends to these addresses are refused."""

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    address: so.Mapped[str] = so.mapped_column(sa.String(320), unique=True)  # lower-cased
    reported_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime)
    email_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("email.id"))
    source: so.Mapped[str] = so.mapped_column(sa.String(20))  # webhook, poll, sync

    email: so.Mapped[Email | None] = so.relationship()

    # Migration 0020. Entries from the list sync, and those the purge unhooked, are not in it.
    __table_args__ = (_naming_an_email("ix_spam_list_entry_email_id"),)


class WebhookBatch(db.Model):
    """A verified event-webhook body, stored before it is applied."""

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    provider: so.Mapped[str] = so.mapped_column(sa.String(20))
    body: so.Mapped[bytes] = so.mapped_column(sa.LargeBinary)
    received_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime, default=utcnow)
    applied_at: so.Mapped[datetime | None] = so.mapped_column(UTCDateTime, index=True)
    # Events of the applied batch that could not be stored, each {position, kind, error}: set aside
    # (services/set_aside.py), so the others were applied; the batch is kept while it holds any.
    set_aside: so.Mapped[list | None] = so.mapped_column(JSONType)


class PendingEvent(db.Model):
    """A provider event for an email we do not know yet (its send record may be late)."""

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    app_message_id: so.Mapped[str] = so.mapped_column(sa.String(100), index=True)  # "" when not given
    # The provider's id of the send request: how an event without our id finds its email later.
    provider_message_id: so.Mapped[str | None] = so.mapped_column(sa.String(200), index=True)
    dedupe_key: so.Mapped[str] = so.mapped_column(sa.String(64), unique=True)
    payload: so.Mapped[dict] = so.mapped_column(JSONType)
    received_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime, default=utcnow)


class Incident(db.Model):
    """Alerts of one cause about one clinic or one provider, grouped (webapp/services/alerts.py).

    Opened by its first alert, closed when none of its alerts is open any more; a later alert of
    the same cause opens a new one.
    """

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    kind: so.Mapped[str] = so.mapped_column(sa.String(40))  # the alerts' kind: the cause
    # "clinic:<id>" or "provider:<name>": whom the cause touches.
    scope: so.Mapped[str] = so.mapped_column(sa.String(80))
    clinic_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("clinic.id"))
    opened_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime, default=utcnow)
    closed_at: so.Mapped[datetime | None] = so.mapped_column(UTCDateTime)

    clinic: so.Mapped[Clinic | None] = so.relationship()

    __table_args__ = (
        # One open incident per cause and scope, even when two workers raise its first alert at once.
        sa.Index(
            "uq_incident_open_kind_scope",
            "kind",
            "scope",
            unique=True,
            postgresql_where=sa.text("closed_at IS NULL"),
            sqlite_where=sa.text("closed_at IS NULL"),
        ),
    )


class OperatorAlert(db.Model):
    """Something an operator or support must look at (bad API key, stuck email)."""

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    kind: so.Mapped[str] = so.mapped_column(sa.String(40))
    message: so.Mapped[str] = so.mapped_column(sa.Text)
    email_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("email.id"))
    created_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime, default=utcnow)
    resolved_at: so.Mapped[datetime | None] = so.mapped_column(UTCDateTime)
    incident_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("incident.id"), index=True)

    # Migration 0020; it also finds an email's alerts. Those about a provider or the clock are not in it.
    __table_args__ = (_naming_an_email("ix_operator_alert_email_id"),)


class AuditEntry(db.Model):
    """One append-only line of the audit trail."""

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    at: so.Mapped[datetime] = so.mapped_column(UTCDateTime, default=utcnow)
    clinic_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("clinic.id"), index=True)
    actor_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("user.id"))
    action: so.Mapped[str] = so.mapped_column(sa.String(40))
    subject_type: so.Mapped[str] = so.mapped_column(sa.String(40), default="")
    subject_id: so.Mapped[int | None] = so.mapped_column()
    detail: so.Mapped[str] = so.mapped_column(sa.Text, default="")

    actor: so.Mapped[User | None] = so.relationship()


class RemovalRequest(db.Model):
    """A client's own request, by email to support, to be taken off the spam list."""

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    received_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime, default=utcnow)
    from_address: so.Mapped[str] = so.mapped_column(sa.String(320), index=True)  # lower-cased addr-spec
    subject: so.Mapped[str] = so.mapped_column(sa.String(300), default="")
    body_excerpt: so.Mapped[str] = so.mapped_column(sa.Text, default="")
    message_id: so.Mapped[str] = so.mapped_column(sa.String(300), default="", index=True)
    # Dedupe: the same mail (its exact bytes) delivered twice by the inbound webhook files one case.
    fingerprint: so.Mapped[str] = so.mapped_column(sa.String(64), unique=True)
    # The mail as it arrived, bytes untouched: the check job reads it, DKIM needs every byte.
    raw_mail: so.Mapped[bytes | None] = so.mapped_column(sa.LargeBinary)
    # checking (the job has not decided yet), verified (proven, see services/inbound/proof.py),
    # unverified, or unverifiable (no raw mail, or the check could not be completed).
    verdict: so.Mapped[str] = so.mapped_column(sa.String(20))
    check_attempts: so.Mapped[int] = so.mapped_column(default=0)
    checked_at: so.Mapped[datetime | None] = so.mapped_column(UTCDateTime)
    # sha256 of the signature that proved the mail: the same signature twice is a replay.
    proof_key: so.Mapped[str | None] = so.mapped_column(sa.String(64), index=True)
    evidence: so.Mapped[dict] = so.mapped_column(JSONType, default=dict)
    # pending, approved, rejected, or closed (another case from the address was approved first,
    # or too many unproven requests from one sender)
    status: so.Mapped[str] = so.mapped_column(sa.String(20), default="pending")
    decided_by_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("user.id"))
    decided_at: so.Mapped[datetime | None] = so.mapped_column(UTCDateTime)
    decision_note: so.Mapped[str] = so.mapped_column(sa.Text, default="")
    lifted_at: so.Mapped[datetime | None] = so.mapped_column(UTCDateTime)  # provider list updated
    # Set when the provider would not lift the block through its API: what support must ask it for.
    provider_lift_detail: so.Mapped[str | None] = so.mapped_column(sa.Text)
    # The provider refused to lift it through its API (provider_lift_detail says what to ask it
    # for): since when. Sending stays blocked until support records that the provider lifted it.
    provider_request_at: so.Mapped[datetime | None] = so.mapped_column(UTCDateTime)
    provider_done_at: so.Mapped[datetime | None] = so.mapped_column(UTCDateTime)
    provider_done_by_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("user.id"))

    decided_by: so.Mapped[User | None] = so.relationship(foreign_keys=[decided_by_id])
    provider_done_by: so.Mapped[User | None] = so.relationship(foreign_keys=[provider_done_by_id])

    @property
    def awaiting_provider(self) -> bool:
        """Approved, but the provider must be asked to lift the block, and support has not recorded it yet."""
        return self.status == "approved" and self.provider_lift_detail is not None and self.lifted_at is None

    __table_args__ = (sa.Index("ix_removal_request_status_received", "status", "received_at"),)
