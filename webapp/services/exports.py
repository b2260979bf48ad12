"""A client's email log for a date range, as records a clinic can hand over: CSV or a printed page."""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import sqlalchemy as sa

from webapp import statuses, timezones
from webapp.extensions import db
from webapp.models import MESSAGE_KINDS, Client, Clinic, Email, User
from webapp.services import audit
from webapp.services.as_sent import CALENDAR_FILENAME
from webapp.services.timelines import TimelineEntry, build_timeline, failure_reason

MAX_DAYS = 400  # RETENTION_DAYS' default: older emails are gone anyway
MAX_EMAILS = 5000
# A spreadsheet runs a cell that starts with one of these as a formula, once it has skipped
# white space and invisible characters, and read full-width and small forms as the plain ones.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_SKIPPED = re.compile(r"[\s\u200b-\u200f\u2060-\u2064\ufeff]*")


class ExportError(ValueError):
    """The date range asked for cannot be exported; the message says why, in plain words."""


@dataclass
class ExportEmail:
    """One email as the export shows it."""

    email: Email
    status: statuses.Status
    timeline: list[TimelineEntry]
    failure: str
    sent_by: str

    @property
    def html_sent(self) -> bool:
        """Whether the email had an HTML part beside its text part."""
        return bool(self.email.content and self.email.content.body_html)

    @property
    def reply_to(self) -> str:
        """The Reply-To it carried ("" for none)."""
        return self.email.content.reply_to if self.email.content else ""

    @property
    def attachment(self) -> str:
        """The name of the file it carried ("" for none)."""
        return CALENDAR_FILENAME if self.email.content and self.email.content.calendar_ics else ""


@dataclass
class Export:
    """What one export holds, and when it was made."""

    clinic: Clinic
    client: Client
    start: date
    end: date
    made_at: datetime
    emails: list[ExportEmail]
    truncated: bool
    time_zone: str = "UTC"

    def local(self, moment: datetime) -> datetime:
        """Return a stored (UTC) moment as the clinic's wall-clock time."""
        return timezones.local(moment, self.time_zone)

    def record_time(self, moment: datetime) -> str:
        """A moment as the CSV and the printed timeline give it: "2026-12-09 10:00:00 MST"."""
        return timezones.format_record(self.local(moment))

    def full_time(self, moment: datetime) -> str:
        """A moment as the printed page's headings give it: "Wed 9 Dec 2026 at 10:00 MST"."""
        return timezones.format_full(self.local(moment))

    def line(self, entry: TimelineEntry) -> str:
        """One timeline line in plain words, in the clinic's time zone."""
        return timeline_text(entry, self.time_zone)

    @staticmethod
    def cell(value: str) -> str:
        """A value that starts a line of the printed page, safe to paste into a spreadsheet."""
        return _cell(value)

    @staticmethod
    def text_part(value: str) -> str:
        """An email's text part for the printed page: each of its lines starts a line there, so
        each is guarded (the CSV guards its cell; the copy in the app shows it as sent)."""
        return "\n".join(_cell(line) for line in value.split("\n"))


def parse_range(start_text: str | None, end_text: str | None, today: date) -> tuple[date, date]:
    """Read a from/to date pair (YYYY-MM-DD); default: the last 30 days up to today."""
    try:
        end = date.fromisoformat(end_text) if end_text else today
        start = date.fromisoformat(start_text) if start_text else end - timedelta(days=29)
    except ValueError:
        raise ExportError("Enter dates as year-month-day, for example 2026-03-01.") from None
    if start > end:
        raise ExportError("The first day must not be after the last day.")
    if end > today:
        raise ExportError("The last day cannot be in the future.")
    if (end - start).days >= MAX_DAYS:
        raise ExportError(f"Export at most {MAX_DAYS} days at a time.")
    return start, end


def build(clinic_id: int, client: Client, start: date, end: date, now: datetime) -> Export:
    """Collect the client's emails created from `start` to `end` (whole days of the clinic's time
    zone), oldest first."""
    clinic = db.session.get(Clinic, clinic_id)
    zone = clinic.timezone or "UTC"
    emails = list(
        db.session.execute(
            sa.select(Email)
            .where(
                Email.clinic_id == clinic_id,
                Email.client_id == client.id,
                Email.created_at >= timezones.day_start(start, zone),
                Email.created_at < timezones.day_start(end + timedelta(days=1), zone),
            )
            .order_by(Email.created_at, Email.id)
            .limit(MAX_EMAILS + 1)
            .options(sa.orm.selectinload(Email.events), sa.orm.selectinload(Email.content))
        ).scalars()
    )
    sender_ids = {email.sent_by_id for email in emails if email.sent_by_id}
    senders = dict(db.session.execute(sa.select(User.id, User.name).where(User.id.in_(sender_ids))).all())
    rows = []
    for email in emails[:MAX_EMAILS]:
        status = statuses.get(email.status)
        rows.append(
            ExportEmail(
                email=email,
                status=status,
                timeline=build_timeline(email.events),
                failure=failure_reason(email) if status == statuses.FAILED else "",
                sent_by=senders.get(email.sent_by_id, ""),
            )
        )
    return Export(clinic, client, start, end, now, rows, truncated=len(emails) > MAX_EMAILS, time_zone=zone)


def record(export: Export, kind: str, by: User) -> None:
    """Audit that the user exported this client's log, and commit."""
    audit.record(
        "email_log.export",
        by,
        clinic_id=export.clinic.id,
        subject_type="client",
        subject_id=export.client.id,
        detail=f"{kind}: {export.start.isoformat()} to {export.end.isoformat()}, {len(export.emails)} emails",
    )
    db.session.commit()


def timeline_text(entry: TimelineEntry, zone: str = "UTC") -> str:
    """One timeline line in plain words, as the printed page and the CSV show it."""
    parts = [f"{timezones.format_record(timezones.local(entry.at, zone))} {entry.label}"]
    if entry.detail:
        parts.append(f"({entry.detail})")
    if entry.url:
        parts.append(entry.url)
    if entry.tags:
        parts.append("[" + ", ".join(entry.tags) + "]")
    return " ".join(parts)


def to_csv(export: Export) -> str:
    """Return the export as CSV: a few lines saying what it is, then one row per email."""
    out = io.StringIO()
    writer = csv.writer(out)
    for label, value in (
        ("Clinic", export.clinic.name),
        ("Client", f"{export.client.name} <{export.client.email}>"),
        ("Period", f"{export.start.isoformat()} to {export.end.isoformat()} (whole days)"),
        ("Time zone", f"{export.time_zone}: every date and time below is {export.time_zone}"),
        ("Made at", export.record_time(export.made_at)),
        ("Emails", str(len(export.emails)) + (f" (only the first {MAX_EMAILS})" if export.truncated else "")),
    ):
        writer.writerow([_cell(label), _cell(value)])
    writer.writerow([])
    writer.writerow(
        [
            "Created",
            "Subject",
            "Kind",
            "To",
            "Status",
            "Why it failed",
            "Sent by",
            "Appointment",
            "Timeline",
            "HTML part",
            "Reply-To",
            "Attachment",
            "Text part",
        ]
    )
    for row in export.emails:
        appointment = row.email.appointment_at
        writer.writerow(
            [
                _cell(value)
                for value in (
                    export.record_time(row.email.created_at),
                    row.email.subject,
                    MESSAGE_KINDS.get(row.email.kind, row.email.kind),
                    row.email.to_address,
                    row.status.label,
                    row.failure,
                    row.sent_by,
                    export.record_time(appointment) if appointment else "",
                    "; ".join(export.line(entry) for entry in row.timeline),
                    "yes" if row.html_sent else "no (text only)",
                    row.reply_to,
                    row.attachment,
                    row.email.body,
                )
            ]
        )
    return out.getvalue()


def _cell(value: str) -> str:
    """Keep a spreadsheet from running a cell as a formula: a quote before one that would."""
    start = value[_SKIPPED.match(value).end() :][:1]
    starts_formula = bool(start) and (
        unicodedata.normalize("NFKC", start)[:1] in FORMULA_STARTS or start == "\u2212"
    )
    return "'" + value if starts_formula or value.startswith(FORMULA_STARTS) else value


def filename(export: Export, extension: str) -> str:
    """A download name that says whose log and which days, in safe characters only."""
    days = f"{export.start.isoformat()}-to-{export.end.isoformat()}"
    return f"email-log-client-{export.client.id}-{days}.{extension}"
