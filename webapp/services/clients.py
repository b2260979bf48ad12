"""Reading clients and their email logs, always within one clinic."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, ClassVar

import sqlalchemy as sa
from markupsafe import Markup

from webapp import statuses, timezones
from webapp.extensions import db
from webapp.models import MESSAGE_KINDS, Client, Email, EmailEvent, RemovalRequest, SpamListEntry, User
from webapp.reject_reasons import normalised, reject_reason_text
from webapp.services.next_steps import is_stuck, support_now

LOG_DAYS = 30
PER_PAGE = 25
# A click this soon after delivery is more likely a link scanner than a person.
AUTOMATED_CLICK_SECONDS = 10
# Several different links clicked within this many seconds: a scanner following every link.
BURST_CLICK_SECONDS = 2


def get_client(clinic_id: int, client_id: int) -> Client | None:
    """Return the clinic's client with this id, or None (also for other clinics')."""
    return db.session.execute(
        sa.select(Client).where(Client.id == client_id, Client.clinic_id == clinic_id)
    ).scalar_one_or_none()


def get_client_and_spam_entry(
    clinic_id: int, client_id: int
) -> tuple[Client, dict[str, SpamListEntry]] | None:
    """Return the clinic's client with this id (None if none), and the spam-list entry of its
    address by address (empty when not listed), for address_health; one query, not two."""
    row = db.session.execute(
        sa.select(Client, SpamListEntry, sa.func.lower(Client.email))
        .outerjoin(SpamListEntry, SpamListEntry.address == sa.func.lower(Client.email))
        .where(Client.id == client_id, Client.clinic_id == clinic_id)
    ).one_or_none()
    if row is None:
        return None
    client, entry, lowered = row
    address = _address(client.email)
    if lowered != address:
        # The database lowers the address otherwise than Python (spaces around it, letters past
        # ASCII in its locale): the join may have missed its entry, so look it up as usual.
        entry = db.session.execute(
            sa.select(SpamListEntry).where(SpamListEntry.address == address)
        ).scalar_one_or_none()
    return client, {address: entry} if entry is not None else {}


def get_email(clinic_id: int, email_id: int) -> Email | None:
    """Return the clinic's email with this id, or None."""
    return db.session.execute(
        sa.select(Email).where(Email.id == email_id, Email.clinic_id == clinic_id)
    ).scalar_one_or_none()


@dataclass
class ClientPage:
    """One page of a client search, with what the pager shows."""

    items: list[Client]
    page: int
    per_page: int
    total: int

    @property
    def pages(self) -> int:
        """How many pages the whole result takes (none when nothing matched)."""
        return -(-self.total // self.per_page)

    @property
    def has_prev(self) -> bool:
        """Whether there is a page before this one."""
        return self.page > 1

    @property
    def has_next(self) -> bool:
        """Whether there is a page after this one."""
        return self.page < self.pages

    @property
    def prev_num(self) -> int:
        """The previous page's number."""
        return self.page - 1

    @property
    def next_num(self) -> int:
        """The next page's number."""
        return self.page + 1


def search(clinic_id: int, query: str, page: int) -> ClientPage:
    """Return one page of the clinic's clients whose name or email contains the query."""
    matching = Client.clinic_id == clinic_id
    if query:
        pattern = "%" + query.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        matching = sa.and_(
            matching,
            sa.or_(
                sa.func.lower(Client.name).like(pattern, escape="\\"),
                sa.func.lower(Client.email).like(pattern, escape="\\"),
            ),
        )
    # The total rides along with the page's rows (one scan of the clinic's clients, not two).
    rows = db.session.execute(
        sa.select(Client, sa.func.count().over().label("total"))
        .where(matching)
        .order_by(Client.name, Client.id)
        .limit(PER_PAGE)
        .offset((page - 1) * PER_PAGE)
    ).all()
    if rows:
        total = rows[0].total
    else:  # past the last page (or nothing matches): the total alone
        counted = sa.select(sa.func.count()).select_from(Client).where(matching)
        total = db.session.execute(counted).scalar_one()
    return ClientPage([row.Client for row in rows], page, PER_PAGE, total)


def clients_with_address(clinic_id: int, address: str) -> list[Client]:
    """Return the clinic's clients whose file holds this address (any case)."""
    return list(
        db.session.execute(
            sa.select(Client)
            .where(Client.clinic_id == clinic_id, sa.func.lower(Client.email) == _address(address))
            .order_by(Client.name, Client.id)
        ).scalars()
    )


@dataclass
class AddressHealth:
    """How mail to a client's address on file is faring: what the clinician must know first.

    One answer feeds the client list's mark, the client file's header, banner and send form, so
    they can never disagree. Blocked (on the spam list) wins; otherwise the newest email to the
    address, by send time, decides.
    """

    state: str  # spam, failure, stuck, deferred, fine
    spam_entry: SpamListEntry | None = None
    # The email the client reported as spam, when this clinic sent it: the spam list is shared by
    # every clinic, and another clinic's subject line is not this clinic's business.
    spam_email: Email | None = None
    # When the client reported it (None: we only know the address is listed since `listed_at`).
    reported_at: datetime | None = None
    latest: Email | LogEmail | None = None  # the newest email to the address on file
    failure_reason: str = ""
    # The client's request to come off the list was approved, but the provider lifts the block
    # only when asked (Postmark, for a spam complaint): since when support is asking it.
    provider_lift_pending_since: datetime | None = None

    LABELS: ClassVar[dict[str, str]] = {
        "fine": "Fine",
        "failure": "Recent failure",
        "stuck": "Email stuck",
        "deferred": "Delayed",
        "spam": "On the spam list",
    }

    @property
    def label(self) -> str:
        """The mark shown beside the client, in words (the colour only repeats it)."""
        if self.state == "spam":
            # Only a report about this clinic's own email is named as one.
            return "On the spam list" if self.spam_email is not None else "Blocked"
        return self.LABELS[self.state]

    @property
    def blocked(self) -> bool:
        """Whether sending to the address is refused."""
        return self.state == "spam"

    @property
    def failed_email(self) -> Email | LogEmail | None:
        """The newest email, when it failed (what the failure banner is about)."""
        return self.latest if self.state == "failure" else None

    @property
    def listed_at(self) -> datetime | None:
        """Since when the address is on our copy of the spam list."""
        return self.spam_entry.reported_at if self.spam_entry else None


def address_health(
    clients: list[Client],
    now: datetime,
    log: list[LogRow] | None = None,
    spam: dict[str, SpamListEntry] | None = None,
) -> dict[int, AddressHealth]:
    """Return the address health of each client, in three queries for the whole list (two when
    `log` is one client's unfiltered email log, which holds its newest email; one fewer when
    `spam` already holds the spam-list entries of their addresses, by address)."""
    if not clients:
        return {}
    addresses = {_address(client.email) for client in clients}
    if spam is None:
        spam = {
            entry.address: entry
            for entry in db.session.execute(
                sa.select(SpamListEntry).where(SpamListEntry.address.in_(addresses))
            ).scalars()
        }
    if log is not None and len(clients) == 1:
        latest_emails = {clients[0].id: newest_in_log(clients[0], log)}
    else:
        latest_emails = _newest_emails(clients, now)
    # Only a failed one needs its events (to say why): read those alone, in one query for the list.
    failed_ids = [
        email.id for email in latest_emails.values() if email and email.status == statuses.FAILED.key
    ]
    failure_events = _events_of(failed_ids, _ROW_EVENT_KINDS)
    reports = _spam_reports(clients, {address for address in addresses if address in spam})
    waiting = provider_lifts_pending({address for address in addresses if address in spam})
    health = {}
    for client in clients:
        address = _address(client.email)
        latest = latest_emails.get(client.id)
        if address in spam:
            entry = spam[address]
            reported = reports.get((client.clinic_id, address))
            if reported is not None:
                spam_email, reported_at = reported
            else:
                # Another clinic's email, or one we never saw: the entry's date is the report's
                # only when it came from the report itself (not from a later dropped send).
                spam_email = None
                dropped = (
                    entry.source != "sync"
                    and entry.email is not None
                    and entry.email.status != statuses.SPAM_REPORT.key
                )
                reported_at = None if dropped else entry.reported_at
            health[client.id] = AddressHealth(
                "spam",
                spam_entry=entry,
                spam_email=spam_email,
                reported_at=reported_at,
                latest=latest,
                provider_lift_pending_since=waiting.get(address),
            )
        elif latest is None:
            health[client.id] = AddressHealth("fine")
        elif latest.status == statuses.FAILED.key:
            reason = failure_reason(latest, failure_events.get(latest.id, []))
            health[client.id] = AddressHealth("failure", latest=latest, failure_reason=reason)
        elif is_stuck(latest, now):
            health[client.id] = AddressHealth("stuck", latest=latest)
        elif latest.status == statuses.DEFERRED.key:
            health[client.id] = AddressHealth("deferred", latest=latest)
        else:
            health[client.id] = AddressHealth("fine", latest=latest)
    return health


def _newest_emails(clients: list[Client], now: datetime) -> dict[int, Email]:
    """The newest email of the log's days to each client's address on file, by client id."""
    newest = (
        sa.select(
            Email.id,
            sa.func.row_number()
            .over(partition_by=Email.client_id, order_by=(Email.created_at.desc(), Email.id.desc()))
            .label("n"),
        )
        .join(Client, Client.id == Email.client_id)
        .where(
            Email.client_id.in_([client.id for client in clients]),
            Email.created_at >= now - timedelta(days=LOG_DAYS),
            # An email to an address since corrected says nothing about the address on file.
            sa.func.lower(Email.to_address) == sa.func.lower(Client.email),
        )
        .subquery()
    )
    latest_emails = {
        email.client_id: email
        for email in db.session.execute(
            sa.select(Email).join(newest, newest.c.id == Email.id).where(newest.c.n == 1)
        ).scalars()
    }
    return latest_emails


def newest_in_log(client: Client, log: list[LogRow]) -> LogEmail | None:
    """The newest email to the client's address on file in its unfiltered log (newest first)."""
    address = client.email.lower()
    # An email to an address since corrected says nothing about the address on file.
    return next((row.email for row in log if row.email.to_address.lower() == address), None)


def _address(address: str) -> str:
    return address.strip().lower()


def provider_lifts_pending(addresses: set[str]) -> dict[str, datetime]:
    """Return, per listed address, since when an approved lift waits for the provider."""
    if not addresses:
        return {}
    rows = db.session.execute(
        sa.select(
            RemovalRequest.from_address,
            sa.func.min(sa.func.coalesce(RemovalRequest.provider_request_at, RemovalRequest.decided_at)),
        )
        .where(
            RemovalRequest.from_address.in_(addresses),
            RemovalRequest.status == "approved",
            RemovalRequest.provider_lift_detail.is_not(None),
            RemovalRequest.lifted_at.is_(None),
        )
        .group_by(RemovalRequest.from_address)
    ).all()
    return {address: since for address, since in rows}


def _spam_reports(
    clients: list[Client], addresses: set[str]
) -> dict[tuple[int, str], tuple[Email, datetime]]:
    """Return, per (clinic, address), the newest email of that clinic reported as spam, and when."""
    if not addresses:
        return {}
    rows = db.session.execute(
        sa.select(Email, EmailEvent.occurred_at)
        .join(EmailEvent, EmailEvent.email_id == Email.id)
        .where(
            EmailEvent.kind == "spamreport",
            Email.clinic_id.in_({client.clinic_id for client in clients}),
            sa.func.lower(Email.to_address).in_(addresses),
        )
        .order_by(EmailEvent.occurred_at)
    ).all()
    # Later rows overwrite earlier ones: the newest report wins.
    return {(email.clinic_id, _address(email.to_address)): (email, at) for email, at in rows}


def failure_reason(email: Email | LogEmail, events: Sequence[Any] | None = None) -> str:
    """Return why an email failed, in plain words (from `events` when given, in stored order)."""
    for event in reversed(email.events if events is None else events):
        if event.kind == "rejected" and normalised(event.reject_reason) != "other":
            # Refused at send time for the address (Postmark's inactive recipient): say why in our words.
            return reject_reason_text(event.reject_reason, event.reason)
        if event.kind == "dropped":
            return reject_reason_text(event.reject_reason, event.reason)
        if event.kind in ("bounce", "rejected", "expired"):
            return plain_bounce_reason(event.reason)
    return email.send_error or "the receiving email provider would not deliver it"


def plain_bounce_reason(reason: str | None) -> str:
    """Explain a bounce in plain words, keeping the server's own text for support."""
    text = (reason or "").strip()
    lowered = text.lower()
    if any(marker in lowered for marker in ("5.1.1", "does not exist", "user unknown", "no such user")):
        return f"the address does not exist at the receiving provider ({text})"
    if "mailbox full" in lowered or "5.2.2" in lowered:
        return f"the client's mailbox is full ({text})"
    return text or "the receiving email provider refused it"


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
# The log renders the timelines of the rows open in the browser (it says which); at most this many.
MAX_OPEN_TIMELINES = 20
# Event kinds a log row reads without its timeline: why it failed, and a failure after delivery.
_ROW_EVENT_KINDS = ("delivered", "bounce", "dropped", "rejected", "expired", "spamreport")


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
    created_at: datetime
    send_state: str
    send_error: str | None
    resend_of_id: int | None
    appointment_at: datetime | None
    version: int
    sender_name: str | None  # who sent it; None: sent automatically
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
        Email.created_at,
        Email.send_state,
        Email.send_error,
        Email.resend_of_id,
        Email.appointment_at,
        Email.version,
        User.name,
    )

    @property
    def reference(self) -> str:
        """The short name support knows this email by (as Email.reference)."""
        return f"E-{self.id}"


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


@dataclass
class LogRow:
    """One email of the log with everything its row shows (its timeline only when open)."""

    email: LogEmail
    status: statuses.Status
    stuck: bool
    late_change: LateChange | None
    failure: str
    resent: Email | None = None  # the newer email that resent this one
    # A later email with the same kind and subject that reached the client: nothing to resend.
    superseded_by: Email | None = None
    # The provider's answer was lost: we are asking its records whether it took the email.
    in_doubt: bool = False
    support_now: bool = False  # stuck, and sent over an hour ago: the clinic contacts support now
    resend_to: str = ""  # failed at an address since corrected: the address on file to resend to
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
    select = (
        sa.select(*LogEmail.COLUMNS)
        .outerjoin(User, User.id == Email.sent_by_id)
        .where(
            Email.clinic_id == clinic_id,
            Email.client_id == client_id,
            Email.created_at >= now - timedelta(days=LOG_DAYS),
        )
        .order_by(Email.created_at.desc(), Email.id.desc())
    )
    if status_key in statuses.BY_KEY:
        select = select.where(Email.status == status_key)
    # Plain columns: run as Core, without the ORM's per-row loading (the same transaction).
    emails = [LogEmail(*row, key=tuple(row)) for row in db.session.connection().execute(select).all()]
    # Only a failed or spam-reported row reads events without its timeline (why it failed, and
    # whether that came after delivery), and only those kinds of event.
    ending = {statuses.FAILED.key, statuses.SPAM_REPORT.key}
    events = _events_of([email.id for email in emails if email.status in ending], _ROW_EVENT_KINDS)
    zone = timezones.zone(tz)
    rows = [_log_row(email, events.get(email.id, []), now, zone) for email in emails]
    wanted = set(sorted(open_ids)[:MAX_OPEN_TIMELINES])
    opened = [row for row in rows if row.email.id in wanted]
    # Whether an email was resent shows on a failed row, and in an open timeline.
    resends = _resends(
        clinic_id, [row.email.id for row in rows if row.status == statuses.FAILED or row in opened]
    )
    for row in rows:
        row.resent = resends.get(row.email.id)
    _mark_superseded(clinic_id, client_id, rows, now)
    timelines = _timelines([row.email for row in opened], resends, now, zone)
    for row, timeline in zip(opened, timelines, strict=True):
        row.timeline = timeline
    for row in rows:
        # A row without notices or timeline shows only its email's columns and how long ago its
        # status changed (and the viewer's time zone, which the template adds to the key).
        if not (row.in_doubt or row.stuck or row.late_change or row.failure or row.timeline):
            row.cache_key = (row.email.key, row.changed_ago)
    return rows


def email_timeline(clinic_id: int, email_id: int, now: datetime, tz: str = "UTC") -> Timeline | None:
    """Return the timeline of the clinic's email with this id, or None."""
    email = get_email(clinic_id, email_id)
    if email is None:
        return None
    return _timelines([email], _resends(clinic_id, [email.id]), now, timezones.zone(tz))[0]


def _resends(clinic_id: int, email_ids: list[int]) -> dict[int, Email]:
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


def _timelines(
    emails: Sequence[Email | LogEmail], resends: dict[int, Email], now: datetime, zone: tzinfo
) -> list[Timeline]:
    """Build the timelines of these emails (each bounded to MAX_TIMELINE_EVENTS events)."""
    events = _events_of([email.id for email in emails], limit=MAX_TIMELINE_EVENTS + 1)
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


def _events_of(
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
        in_doubt=email.send_state == "in_doubt",
        changed_ago=timezones.ago(email.status_changed_at, now),
        zone=zone,
    )


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
            entry.detail = "; ".join(part for part in (attempt, event.reason or "") if part)
        elif kind == "dropped":
            entry.detail = reject_reason_text(event.reject_reason, event.reason)
        elif kind in ("bounce", "rejected", "expired"):
            entry.detail = plain_bounce_reason(event.reason) if kind == "bounce" else (event.reason or "")
        elif kind == "delivered":
            entry.detail = (event.raw or {}).get("response", "")
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
