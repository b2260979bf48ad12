"""An email's events in the clinician's words: its timeline, why it failed, a failure after delivery."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from webapp import bounce_reasons, statuses, timezones
from webapp.extensions import db
from webapp.models import Email, EmailEvent
from webapp.reject_reasons import normalised, reject_reason_text
from webapp.services.clients import LOG_DAYS, get_email

if TYPE_CHECKING:
    from webapp.services.log_rows import LogEmail

# A click this soon after delivery is more likely a link scanner than a person.
AUTOMATED_CLICK_SECONDS = 10
# Several different links clicked within this many seconds: a scanner following every link.
BURST_CLICK_SECONDS = 2


def failure_reason(email: Email | LogEmail, events: Sequence[Any] | None = None) -> str:
    """Return why an email failed, in plain words (from `events` when given, in stored order)."""
    for event in reversed(email.events if events is None else events):
        if event.kind == "rejected" and normalised(event.reject_reason) != "other":
            # Refused at send time for the address (Postmark's inactive recipient): say why in our words.
            return reject_reason_text(event.reject_reason, event.reason)
        if event.kind == "dropped":
            return reject_reason_text(event.reject_reason, event.reason)
        if event.kind in ("bounce", "rejected", "expired"):
            return bounce_reasons.failure_words(event.reason, event.reject_reason)
    return email.send_error or "the receiving email provider would not deliver it"


@dataclass(slots=True)
class TimelineEntry:
    """One line of an email's timeline, in the clinician's words."""

    at: datetime
    kind: str
    label: str
    detail: str = ""
    url: str = ""
    tags: list[str] = field(default_factory=list)


# What a timeline line carries, as the template unpacks it: datetime attribute, style, time
# shown, label, detail, url, tags (one tuple instead of seven attribute lookups per line).
TimelineLine = tuple[str, str, str, str, str, str, list[str]]
# One email's timeline shows at most this many events (a link scanner may click thousands of times).
MAX_TIMELINE_EVENTS = 500


@dataclass
class Timeline:
    """One email's timeline as its opened log row and its own page show it."""

    email: Email | LogEmail
    status: statuses.Status
    lines: list[TimelineLine]
    resent: Email | None = None  # the newer email that resent this one
    original: Email | None = None  # the email this one resent
    # Whether the original is within the log's days, so the client file has a row to link to.
    original_in_log: bool = False
    more: bool = False  # events past MAX_TIMELINE_EVENTS, not shown

    @property
    def max_events(self) -> int:
        """How many events a timeline shows at most."""
        return MAX_TIMELINE_EVENTS


def email_timeline(clinic_id: int, email_id: int, now: datetime, tz: str = "UTC") -> Timeline:
    """Return the timeline of the clinic's email with this id, or abort with 404."""
    email = get_email(clinic_id, email_id)
    return timelines_for([email], resends_of(clinic_id, [email.id]), now, timezones.zone(tz))[0]


def resends_of(clinic_id: int, email_ids: list[int]) -> dict[int, Email]:
    """The newest email that resent each of these emails, by the resent email's id."""
    if not email_ids:
        return {}
    resends = db.session.execute(
        sa.select(Email)
        .where(Email.clinic_id == clinic_id, Email.resend_of_id.in_(email_ids))
        .order_by(Email.created_at)
    ).scalars()
    # Later rows overwrite earlier ones: the newest resend wins.
    return {email.resend_of_id: email for email in resends if email.resend_of_id is not None}


def timelines_for(
    emails: Sequence[Email | LogEmail], resends: dict[int, Email], now: datetime, zone: tzinfo
) -> list[Timeline]:
    """Build the timelines of these emails (each bounded to MAX_TIMELINE_EVENTS events)."""
    events = events_of([email.id for email in emails], limit=MAX_TIMELINE_EVENTS + 1)
    originals = _originals(emails)
    result = []
    for email in emails:
        own = events.get(email.id, [])
        original = originals.get(email.resend_of_id or 0)
        result.append(
            Timeline(
                email=email,
                status=statuses.get(email.status),
                lines=_lines(build_timeline(own[:MAX_TIMELINE_EVENTS]), email.created_at, zone),
                resent=resends.get(email.id),
                original=original,
                original_in_log=original is not None
                and original.created_at >= now - timedelta(days=LOG_DAYS),
                more=len(own) > MAX_TIMELINE_EVENTS,
            )
        )
    return result


def _originals(emails: Sequence[Email | LogEmail]) -> dict[int, Email]:
    """The emails these ones resent, by id (same clinic: a resend is made from its original)."""
    ids = [email.resend_of_id for email in emails if email.resend_of_id]
    if not ids:
        return {}
    found = db.session.execute(sa.select(Email).where(Email.id.in_(ids))).scalars()
    return {email.id: email for email in found}


def _lines(timeline: list[TimelineEntry], created_at: datetime, zone: tzinfo) -> list[TimelineLine]:
    """The timeline's lines as shown: the time alone on the email's own day, else with the date."""
    created = created_at.astimezone(zone).date()
    lines = []
    for entry in timeline:
        at = entry.at.astimezone(zone)
        if at.date() == created:
            style, shown = "time", timezones.format_time(at)
        else:
            style, shown = "datetime", timezones.format_datetime(at)
        lines.append((entry.at.isoformat(), style, shown, entry.label, entry.detail, entry.url, entry.tags))
    return lines


def events_of(
    email_ids: list[int], kinds: Sequence[str] | None = None, limit: int | None = None
) -> dict[int, list[Any]]:
    """The events of these emails as plain rows (only what a timeline reads), in Email.events' order;
    only of these `kinds` when given, and the first `limit` of each email when given."""
    by_email: dict[int, list[Any]] = {}
    if not email_ids:
        return by_email
    order = (EmailEvent.occurred_at, EmailEvent.id)
    columns = [
        EmailEvent.email_id,
        EmailEvent.occurred_at,
        EmailEvent.kind,
        EmailEvent.reason,
        EmailEvent.reject_reason,
        EmailEvent.url,
        EmailEvent.attempt,
        EmailEvent.machine,
        EmailEvent.raw,
        EmailEvent.dedupe_key,
        EmailEvent.id,
    ]
    select = sa.select(*columns).where(EmailEvent.email_id.in_(email_ids))
    if kinds is not None:
        select = select.where(EmailEvent.kind.in_(kinds))
    if limit is not None:
        number = sa.func.row_number().over(partition_by=EmailEvent.email_id, order_by=order).label("n")
        numbered = select.add_columns(number).subquery()
        select = sa.select(*(numbered.c[column.key] for column in columns)).where(numbered.c.n <= limit)
        order = (numbered.c.occurred_at, numbered.c.id)
    for row in db.session.execute(select.order_by(*order)):
        by_email.setdefault(row.email_id, []).append(row)
    return by_email


def build_timeline(events: Sequence[Any]) -> list[TimelineEntry]:
    """Turn stored events into timeline lines, labelling machine opens and automated clicks."""
    position = statuses.lifecycle_position
    ordered = sorted(events, key=lambda event: (event.occurred_at, position(event.kind), event.dedupe_key))
    delivered_at = min((event.occurred_at for event in ordered if event.kind == "delivered"), default=None)
    clicks = [event for event in ordered if event.kind == "click"]
    labels = statuses.EVENT_LABELS
    entries = []
    for event in ordered:
        kind = event.kind
        entry = TimelineEntry(event.occurred_at, kind, labels.get(kind, kind))
        if kind == "deferred":
            attempt = f"attempt {event.attempt}" if event.attempt else ""
            said = bounce_reasons.timeline_words(event.reason) if event.reason else ""
            entry.detail = "; ".join(part for part in (attempt, said) if part)
        elif kind == "dropped":
            entry.detail = reject_reason_text(event.reject_reason, event.reason)
        elif kind == "bounce":
            entry.detail = bounce_reasons.timeline_words(event.reason, event.reject_reason)
        elif kind in ("rejected", "expired"):
            entry.detail = event.reason or ""
        elif kind in ("delivered", "spam_filtered"):
            # The receiving server's answer: SendGrid's webhook `response`, Postmark's `Details`.
            entry.detail = bounce_reasons.answer(event.reason or (event.raw or {}).get("response"))
        elif kind == "open" and event.machine:
            entry.tags.append("machine open")
        elif kind == "click":
            entry.url = event.url or ""
            if _looks_automated(event, delivered_at, clicks):
                entry.tags.append("likely automated")
        entries.append(entry)
    return entries


@dataclass
class LateChange:
    """A failure or spam report that came after the email had been delivered."""

    delivered_at: datetime
    verb: str
    changed_at: datetime


def late_change_sentence(timeline: list[TimelineEntry]) -> LateChange | None:
    """Find a failure or spam report that came after the email had been delivered."""
    delivered = next((entry for entry in timeline if entry.kind == "delivered"), None)
    late = next(
        (entry for entry in timeline if entry.kind in ("bounce", "spamreport", "dropped")),
        None,
    )
    if delivered is None or late is None or late.at < delivered.at:
        return None
    verb = {"bounce": "bounced", "spamreport": "reported as spam", "dropped": "dropped"}[late.kind]
    return LateChange(delivered.at, verb, late.at)


def _looks_automated(click: Any, delivered_at: datetime | None, clicks: list[Any]) -> bool:
    if (
        delivered_at is not None
        and (click.occurred_at - delivered_at).total_seconds() <= AUTOMATED_CLICK_SECONDS
    ):
        return True
    burst = {
        other.url
        for other in clicks
        if abs((other.occurred_at - click.occurred_at).total_seconds()) <= BURST_CLICK_SECONDS
    }
    return len(burst) >= 3
