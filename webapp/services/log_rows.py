"""The email log's rows: what each row of a client's log shows, read in a few queries for the whole log."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from functools import lru_cache
from typing import Any, ClassVar

import sqlalchemy as sa
from markupsafe import Markup

from webapp import statuses, timezones
from webapp.event_kinds import EventKind
from webapp.extensions import db
from webapp.models import MESSAGE_KINDS, Email, User
from webapp.services.clients import LOG_DAYS
from webapp.services.filed_as_spam import filed_as_spam_column
from webapp.services.next_steps import is_stuck, support_now
from webapp.services.timelines import (
    LateChange,
    Timeline,
    build_timeline,
    events_of,
    failure_reason,
    late_change_sentence,
    resends_of,
    timelines_for,
)

# The log renders the timelines of the rows open in the browser (it says which); at most this many.
MAX_OPEN_TIMELINES = 20
# Event kinds a log row reads without its timeline: why it failed, and a failure after delivery.
ROW_EVENT_KINDS = (
    EventKind.DELIVERED,
    EventKind.BOUNCED,
    EventKind.DROPPED,
    EventKind.REJECTED,
    EventKind.EXPIRED,
    EventKind.REPORTED_AS_SPAM,
)


@dataclass(slots=True)
class LogEmail:
    """What a log row reads of an email, read as a plain row: 200 ORM objects cost more than the
    rest of the log's queries."""

    id: int
    clinic_id: int
    client_id: int
    to_address: str
    subject: str
    kind: str
    status: str
    status_changed_at: datetime
    status_received_at: datetime | None  # our clock: when we received the current status
    created_at: datetime
    send_state: str
    send_error: str | None
    resend_of_id: int | None
    appointment_at: datetime | None
    version: int
    sender_name: str | None  # who sent it; None: sent automatically
    # When the client's mail server said it filed this email as spam (Postmark), if it did.
    filed_as_spam_at: datetime | None
    # Everything above as read (version included): what a cached rendering of the row is keyed by.
    key: tuple = ()

    COLUMNS: ClassVar[tuple] = (
        Email.id,
        Email.clinic_id,
        Email.client_id,
        Email.to_address,
        Email.subject,
        Email.kind,
        Email.status,
        Email.status_changed_at,
        Email.status_received_at,
        Email.created_at,
        Email.send_state,
        Email.send_error,
        Email.resend_of_id,
        Email.appointment_at,
        Email.version,
        User.name,
        filed_as_spam_column(),
    )

    @property
    def reference(self) -> str:
        """The short name support knows this email by (as Email.reference)."""
        return f"E-{self.id}"


@dataclass
class LogRow:
    """One email of the log with everything its row shows (its timeline only when open)."""

    email: LogEmail
    status: statuses.Status
    stuck: bool
    late_change: LateChange | None
    failure: str
    # When the client's mail server said it filed this delivered email as spam (Postmark).
    filed_as_spam_at: datetime | None = None
    resent: Email | None = None  # the newer email that resent this one
    # A later email with the same kind and subject that reached the client: nothing to resend.
    superseded_by: Email | None = None
    # The provider's answer was lost: we are asking its records whether it took the email.
    support_now: bool = False  # stuck, and sent over an hour ago: the clinic contacts support now
    resend_to: str = ""  # failed at an address since corrected: the address on file to resend to
    # Our handover is unsettled (the answer was lost, or the provider never reports): what the row says.
    handover: statuses.HandoverNote | None = None
    changed_ago: str = ""  # how long ago its status changed, as the row shows it
    zone: tzinfo = UTC  # the clinic's time zone, in which the row shows its times
    # Rendered with the row only when the browser has it open; otherwise fetched when opened.
    timeline: Timeline | None = None
    # Everything the row's HTML depends on besides the request's time zone and URLs, when that is
    # only the email and the moment (no notice, no timeline): the row may come from the cache.
    cache_key: tuple | None = None
    html: Markup | None = None  # the row as rendered before under its key, when kept

    # What follows is read only when the row is rendered, not when it comes from the cache.

    @property
    def created_shown(self) -> str:
        """When the email was sent, in the clinic's time zone."""
        return timezones.format_datetime(self.email.created_at.astimezone(self.zone))

    @property
    def created_iso(self) -> str:
        """When the email was sent, as a datetime attribute."""
        return self.email.created_at.isoformat()

    @property
    def changed_iso(self) -> str:
        """When its status changed, as a datetime attribute."""
        return self.email.status_changed_at.isoformat()

    @property
    def kind_label(self) -> str:
        """The kind of message, unless the subject already says it ("Your receipt", a receipt)."""
        kind = MESSAGE_KINDS.get(self.email.kind, self.email.kind)
        return "" if kind.lower() in self.email.subject.lower() else kind


def email_log(
    clinic_id: int,
    client_id: int,
    status_key: str | None,
    now: datetime,
    tz: str = "UTC",
    open_ids: set[int] | frozenset[int] = frozenset(),
) -> list[LogRow]:
    """Return the client's emails of the past 30 days, newest first; the rows in `open_ids` (at most
    MAX_OPEN_TIMELINES) carry their timeline, times formatted in the time zone `tz`."""
    filtered = status_key in statuses.BY_KEY
    parameters = {"clinic_id": clinic_id, "client_id": client_id, "since": now - timedelta(days=LOG_DAYS)}
    if filtered:
        parameters["status"] = status_key
    # Plain columns: run as Core, without the ORM's per-row loading (the same transaction).
    result = db.session.connection().execute(_rows_statement(filtered), parameters)
    emails = [LogEmail(*row, key=tuple(row)) for row in result.all()]
    # Only a failed or spam-reported row reads events without its timeline (why it failed, and
    # whether that came after delivery), and only those kinds of event.
    ending = {statuses.FAILED.key, statuses.SPAM_REPORT.key}
    events = events_of([email.id for email in emails if email.status in ending], ROW_EVENT_KINDS)
    zone = timezones.zone(tz)
    rows = [_log_row(email, events.get(email.id, []), now, zone) for email in emails]
    wanted = set(sorted(open_ids)[:MAX_OPEN_TIMELINES])
    opened = [row for row in rows if row.email.id in wanted]
    # Whether an email was resent shows on a failed row, and in an open timeline.
    resends = resends_of(
        clinic_id, [row.email.id for row in rows if row.status == statuses.FAILED or row in opened]
    )
    for row in rows:
        row.resent = resends.get(row.email.id)
    _mark_superseded(clinic_id, client_id, rows, now)
    timelines = timelines_for([row.email for row in opened], resends, now, zone)
    for row, timeline in zip(opened, timelines, strict=True):
        row.timeline = timeline
    for row in rows:
        # A row without notices or timeline shows only its email's columns and how long ago its
        # status changed (and the viewer's time zone, which the template adds to the key).
        notices = row.handover or row.stuck or row.late_change or row.failure or row.filed_as_spam_at
        if not (notices or row.timeline):
            row.cache_key = (row.email.key, row.changed_ago)
    return rows


@lru_cache(maxsize=2)
def _rows_statement(filtered: bool) -> sa.Select:
    """The log's rows, newest first (`filtered`: of one status); built once, bound at each render
    (building a statement and its cache key costs about as much as its round trip)."""
    select = (
        sa.select(*LogEmail.COLUMNS)
        .outerjoin(User, User.id == Email.sent_by_id)
        .where(
            Email.clinic_id == sa.bindparam("clinic_id"),
            Email.client_id == sa.bindparam("client_id"),
            Email.created_at >= sa.bindparam("since", type_=Email.created_at.type),
        )
        .order_by(Email.created_at.desc(), Email.id.desc())
    )
    return select.where(Email.status == sa.bindparam("status")) if filtered else select


# Statuses that show an email reached the client's mailbox.
REACHED = (statuses.DELIVERED.key, statuses.OPEN.key, statuses.CLICKED.key)


def _mark_superseded(clinic_id: int, client_id: int, rows: list[LogRow], now: datetime) -> None:
    """Point each failed row at a later copy that reached the client (after an address
    correction, say): offering "Resend…" for it would send the same email twice."""
    failed = [row for row in rows if row.status == statuses.FAILED and row.resent is None]
    later = later_copies(clinic_id, [row.email for row in failed], now)
    for row in failed:
        row.superseded_by = later.get(row.email.id)


def later_copies(clinic_id: int, failed: Sequence[Email | LogEmail], now: datetime) -> dict[int, Email]:
    """Return, by failed email id, a later email with the same kind and subject that reached the
    same client: that email needs no resend."""
    if not failed:
        return {}
    reached = db.session.execute(
        sa.select(Email)
        .where(
            Email.clinic_id == clinic_id,
            Email.client_id.in_({email.client_id for email in failed}),
            Email.status.in_(REACHED),
            Email.created_at >= now - timedelta(days=LOG_DAYS),
        )
        .order_by(Email.created_at, Email.id)
    ).scalars()
    by_what: dict[tuple[int, str, str], list[Email]] = {}
    for email in reached:
        by_what.setdefault((email.client_id, email.kind, email.subject), []).append(email)
    found = {}
    for email in failed:
        copies = by_what.get((email.client_id, email.kind, email.subject), [])
        later = next((copy for copy in copies if copy.created_at > email.created_at), None)
        if later is not None:
            found[email.id] = later
    return found


def resent_ids(clinic_id: int, email_ids: list[int]) -> set[int]:
    """Return which of these emails have been resent."""
    if not email_ids:
        return set()
    return set(
        db.session.execute(
            sa.select(Email.resend_of_id).where(
                Email.clinic_id == clinic_id, Email.resend_of_id.in_(email_ids)
            )
        ).scalars()
    )


def _log_row(email: LogEmail, events: list[Any], now: datetime, zone: tzinfo) -> LogRow:
    status = statuses.get(email.status)
    return LogRow(
        email=email,
        status=status,
        stuck=is_stuck(email, now),
        support_now=support_now(email, now),
        late_change=late_change_sentence(build_timeline(events)) if events else None,
        failure=failure_reason(email, events) if status == statuses.FAILED else "",
        handover=statuses.handover_note(email.send_state),
        changed_ago=timezones.ago(email.status_changed_at, now),
        zone=zone,
        # Only an email that reached the client can have been filed as spam by its mail server.
        filed_as_spam_at=email.filed_as_spam_at if email.status in REACHED else None,
    )
