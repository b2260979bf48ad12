"""The owner's deliverability view: a clinic's last 30 days of email, by day and status."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from webapp import statuses, timezones
from webapp.extensions import db
from webapp.models import Client, Email, EmailEvent, SpamListEntry, UTCDateTime
from webapp.reject_reasons import reject_reason_text

WINDOW_DAYS = 30
TOP_REASONS = 5
# Statuses that mean the receiving server took the email.
DELIVERED_OR_LATER = (statuses.DELIVERED.key, statuses.OPEN.key, statuses.CLICKED.key)
FAILURE_KINDS = ("bounce", "dropped", "rejected", "expired")


@dataclass
class Period:
    """Totals of one 30-day period."""

    counts: Counter = field(default_factory=Counter)

    @property
    def total(self) -> int:
        """Every email created in the period."""
        return sum(self.counts.values())

    def share(self, keys: tuple[str, ...]) -> float | None:
        """Return the share of emails in these statuses, in percent (None without emails)."""
        return 100 * sum(self.counts[key] for key in keys) / self.total if self.total else None


@dataclass
class Change:
    """One figure now and in the previous 30 days."""

    label: str
    current: float | None
    previous: float | None
    unit: str  # "" for counts, "%" for shares
    better_when: str  # "up" or "down"

    @property
    def delta(self) -> float | None:
        """The difference, in the figure's own unit (percentage points for shares)."""
        if self.current is None or self.previous is None:
            return None
        return self.current - self.previous


@dataclass
class BlockedClient:
    """A client whose address is on the spam-report list."""

    client: Client
    reported_at: datetime


@dataclass
class Overview:
    """Everything the owner's view shows."""

    days: list[date]
    daily: dict[date, Counter]  # day -> status key -> emails created that day
    current: Period
    previous: Period
    reasons: list[tuple[str, int]]
    blocked: list[BlockedClient]

    @property
    def changes(self) -> list[Change]:
        """Compare the last 30 days with the 30 before."""
        return [
            Change("Emails sent", self.current.total, self.previous.total, "", "none"),
            Change(
                "Reached the inbox server",
                self.current.share(DELIVERED_OR_LATER),
                self.previous.share(DELIVERED_OR_LATER),
                "%",
                "up",
            ),
            Change(
                "Failed",
                self.current.share((statuses.FAILED.key,)),
                self.previous.share((statuses.FAILED.key,)),
                "%",
                "down",
            ),
            Change(
                "Reported as spam",
                self.current.counts[statuses.SPAM_REPORT.key],
                self.previous.counts[statuses.SPAM_REPORT.key],
                "",
                "down",
            ),
        ]


def window(now: datetime, zone: str = "UTC") -> tuple[list[date], datetime]:
    """Return the clinic's 30 days shown (oldest first, days of the clinic's calendar in `zone`)
    and when they start."""
    today = timezones.today(now, zone)
    days = [today - timedelta(days=offset) for offset in range(WINDOW_DAYS - 1, -1, -1)]
    return days, timezones.day_start(days[0], zone)


def overview(clinic_id: int, now: datetime, zone: str = "UTC") -> Overview:
    """Return the clinic's last 30 days by day and status, with reasons, blocks and the change
    (days of the clinic's calendar, in its time zone `zone`)."""
    days, start = window(now, zone)
    daily: dict[date, Counter] = {day: Counter() for day in days}
    current, previous = Period(), Period()
    first = days[0] - timedelta(days=WINDOW_DAYS)
    for day, status, count in daily_counts(clinic_id, first, 2 * WINDOW_DAYS, zone, now):
        if day >= days[0]:
            daily.setdefault(day, Counter())[status] += count
            current.counts[status] += count
        else:
            previous.counts[status] += count
    return Overview(
        days=days,
        daily=daily,
        current=current,
        previous=previous,
        reasons=failure_reasons(clinic_id, start, now),
        blocked=blocked_clients(clinic_id),
    )


def daily_counts(
    clinic_id: int, first: date, days: int, zone: str, until: datetime
) -> list[tuple[date, str, int]]:
    """Count the clinic's emails per day of its calendar and status, for `days` days from `first`
    (up to `until`): the one aggregate query of the view.

    The day boundaries are worked out here, from the pinned zone rules, and compared in SQL:
    the database's own zone rules would be a second, possibly older, source.
    """
    starts = timezones.day_starts(first, days, zone)
    day = _day_index(Email.created_at, starts)
    rows = db.session.execute(
        sa.select(day.label("day"), Email.status, sa.func.count())
        .where(Email.clinic_id == clinic_id, Email.created_at >= starts[0], Email.created_at <= until)
        .group_by(day, Email.status)
    ).all()
    return [(first + timedelta(days=index), status, count) for index, status, count in rows if index < days]


def _day_index(column: sa.ColumnElement, starts: list[datetime]) -> sa.ColumnElement:
    """Which day a timestamp falls on, from 0, given when each day starts (ascending)."""
    if db.session.get_bind().dialect.name == "postgresql":
        # A binary search over the boundaries; the CASE below made the query twice as slow.
        bounds = sa.bindparam("day_starts", starts, type_=postgresql.ARRAY(UTCDateTime()))
        return sa.func.width_bucket(column, bounds) - 1
    return sa.case(
        *((column < boundary, index) for index, boundary in enumerate(starts[1:])), else_=len(starts) - 1
    )


def failure_reasons(clinic_id: int, since: datetime, until: datetime) -> list[tuple[str, int]]:
    """Return the most common reasons the clinic's emails failed, in plain words, most common first."""
    rows = db.session.execute(
        sa.select(
            EmailEvent.kind,
            EmailEvent.reason,
            EmailEvent.reject_reason,
            sa.func.count(sa.distinct(EmailEvent.email_id)),
        )
        .join(Email, Email.id == EmailEvent.email_id)
        .where(
            Email.clinic_id == clinic_id,
            Email.created_at >= since,
            Email.created_at <= until,
            Email.status == statuses.FAILED.key,
            EmailEvent.kind.in_(FAILURE_KINDS),
        )
        .group_by(EmailEvent.kind, EmailEvent.reason, EmailEvent.reject_reason)
    ).all()
    reasons: Counter = Counter()
    for kind, reason, reject_reason, count in rows:
        reasons[plain_failure(kind, reason, reject_reason)] += count
    return reasons.most_common(TOP_REASONS)


def plain_failure(kind: str, reason: str | None, reject_reason: str | None = None) -> str:
    """Put a failure into one of a few plain-words groups, so that alike failures count together."""
    text = (reason or "").lower()
    if kind == "dropped":
        return reject_reason_text(reject_reason, reason).capitalize()
    if kind == "expired":
        return "The receiving server kept deferring it for 72 hours"
    if kind == "rejected":
        return "The email provider refused to send it"
    if any(marker in text for marker in ("5.1.1", "does not exist", "user unknown", "no such user")):
        return "The address does not exist"
    if "mailbox full" in text or "5.2.2" in text or "quota" in text:
        return "The client's mailbox is full"
    if "spam" in text or "blocked" in text or "5.7." in text:
        return "The receiving server blocked it as unwanted mail"
    return "The receiving server refused it"


def blocked_clients(clinic_id: int) -> list[BlockedClient]:
    """Return the clinic's clients whose address is on the spam-report list, latest report first."""
    rows = db.session.execute(
        sa.select(Client, SpamListEntry.reported_at)
        .join(SpamListEntry, SpamListEntry.address == sa.func.lower(sa.func.trim(Client.email)))
        .where(Client.clinic_id == clinic_id)
        .order_by(SpamListEntry.reported_at.desc(), Client.name)
    ).all()
    return [BlockedClient(client, reported_at) for client, reported_at in rows]
