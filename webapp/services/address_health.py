"""Address health: how mail to each client's address on file is faring, in one answer for the
client list's mark and the client file's header, banner and send form."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import ClassVar

import sqlalchemy as sa

from webapp import bounce_reasons, statuses
from webapp.extensions import db
from webapp.models import Client, Email, EmailEvent, RemovalRequest, SpamListEntry
from webapp.services.clients import LOG_DAYS, canonical_address
from webapp.services.log_rows import ROW_EVENT_KINDS, LogEmail, LogRow
from webapp.services.next_steps import is_stuck
from webapp.services.timelines import events_of, failure_reason


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
    failure_key: str | None = None  # bounce_reasons' key of that reason, when it has one
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
    addresses = {canonical_address(client.email) for client in clients}
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
    failure_events = events_of(failed_ids, ROW_EVENT_KINDS)
    reports = _spam_reports(clients, {address for address in addresses if address in spam})
    waiting = provider_lifts_pending({address for address in addresses if address in spam})
    health = {}
    for client in clients:
        address = canonical_address(client.email)
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
            own = failure_events.get(latest.id, [])
            health[client.id] = AddressHealth(
                "failure", latest=latest, failure_reason=failure_reason(latest, own)
            )
            health[client.id].failure_key = bounce_reasons.failure_key(own)
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
    return {(email.clinic_id, canonical_address(email.to_address)): (email, at) for email, at in rows}
