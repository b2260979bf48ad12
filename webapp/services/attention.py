"""Needs attention: what a clinic's clinicians must act on, the most urgent first.

An appointment at risk (its reminder or intake form failed, is blocked, or is still not delivered
24 hours before) comes first, with "call the client"; then failed emails, clients blocked by a
spam report, stuck emails and deferrals older than an hour, each with its next step.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from webapp import statuses
from webapp.extensions import db
from webapp.models import Client, Email, SpamListEntry, User, utcnow
from webapp.services import audit, clients

# An appointment email not delivered this long before the appointment: call the client.
CALL_BEFORE = timedelta(hours=24)
# A deferral is normal for a while; after this long the clinician should know.
DEFERRED_FOR = timedelta(hours=1)
NOT_YET = (statuses.SENDING.key, statuses.PROCESSED.key, statuses.DEFERRED.key)
# Most urgent first.
KINDS = ("appointment", "failed", "blocked", "stuck", "deferred")


@dataclass
class Item:
    """One thing to act on, with what the page needs to say what happened and what to do."""

    kind: str  # one of KINDS
    client: Client
    email: Email | None
    since: datetime
    # appointment: "failed", "blocked" or "not_delivered"; failed: the reason in plain words;
    # blocked: "provider_lift" when the client's request is approved and the provider must lift it
    reason: str = ""

    @property
    def key(self) -> str:
        """A stable anchor for the item on the page."""
        return f"{self.kind}-{self.email.id if self.email else self.client.id}"


def items(clinic_id: int, now: datetime | None = None) -> list[Item]:
    """Return what needs attention at the clinic, most urgent first."""
    now = now or utcnow()
    stuck_before = now - timedelta(seconds=statuses.STUCK_AFTER_SECONDS)
    emails = list(
        db.session.execute(
            sa.select(Email)
            .where(
                Email.clinic_id == clinic_id,
                Email.handled_at.is_(None),
                Email.created_at >= now - timedelta(days=clients.LOG_DAYS),
                sa.or_(
                    Email.status == statuses.FAILED.key,
                    sa.and_(
                        Email.status.in_((statuses.SENDING.key, statuses.PROCESSED.key)),
                        Email.status_changed_at <= stuck_before,
                    ),
                    sa.and_(
                        Email.status == statuses.DEFERRED.key, Email.status_changed_at <= now - DEFERRED_FOR
                    ),
                    sa.and_(
                        Email.status.in_(NOT_YET),
                        Email.appointment_at > now,
                        Email.appointment_at <= now + CALL_BEFORE,
                    ),
                ),
            )
            .options(sa.orm.joinedload(Email.client), sa.orm.selectinload(Email.events))
            .order_by(Email.created_at.desc(), Email.id.desc())
        )
        .unique()
        .scalars()
    )
    failed = [email for email in emails if email.status == statuses.FAILED.key]
    resent = clients.resent_ids(clinic_id, [email.id for email in failed])
    later = clients.later_copies(clinic_id, failed, now)
    blocked = blocked_clients(clinic_id)
    blocked_addresses = {client.email.strip().lower() for client, _ in blocked}
    found: list[Item] = []
    for email in emails:
        if email.id in resent or email.id in later:
            continue  # a resend or a later copy carries it now
        to_blocked = email.to_address.strip().lower() in blocked_addresses
        at_risk = email.appointment_at is not None and email.appointment_at > now
        if at_risk and email.status == statuses.FAILED.key:
            found.append(
                Item(
                    "appointment",
                    email.client,
                    email,
                    email.status_changed_at,
                    "blocked" if to_blocked else "failed",
                )
            )
        elif at_risk and email.status in NOT_YET and email.appointment_at - CALL_BEFORE <= now:
            found.append(
                Item("appointment", email.client, email, email.appointment_at - CALL_BEFORE, "not_delivered")
            )
        elif email.status == statuses.FAILED.key:
            if not to_blocked:  # the blocked client's own item says what to do
                found.append(
                    Item(
                        "failed", email.client, email, email.status_changed_at, clients.failure_reason(email)
                    )
                )
        elif clients.is_stuck(email, now):
            found.append(Item("stuck", email.client, email, email.status_changed_at))
        elif email.status == statuses.DEFERRED.key and email.status_changed_at <= now - DEFERRED_FOR:
            found.append(Item("deferred", email.client, email, email.status_changed_at))
    # An approved request the provider must still lift (Postmark): the clinic has nothing to do.
    waiting = clients.provider_lifts_pending(blocked_addresses)
    for client, entry in blocked:
        reason = "provider_lift" if client.email.strip().lower() in waiting else ""
        found.append(Item("blocked", client, None, entry.reported_at, reason))
    # Appointments by how soon they are; everything else by kind, newest first.
    found.sort(key=lambda item: item.since.timestamp(), reverse=True)
    found.sort(key=lambda item: (KINDS.index(item.kind), _appointment_order(item)))
    return found


def _appointment_order(item: Item) -> float:
    if item.kind == "appointment" and item.email and item.email.appointment_at:
        return item.email.appointment_at.timestamp()
    return 0.0


def blocked_clients(clinic_id: int) -> list[tuple[Client, SpamListEntry]]:
    """Return the clinic's clients whose address is on the spam list, with the list entry."""
    return [
        (client, entry)
        for client, entry in db.session.execute(
            sa.select(Client, SpamListEntry)
            .join(SpamListEntry, SpamListEntry.address == sa.func.lower(Client.email))
            .where(Client.clinic_id == clinic_id)
            .order_by(SpamListEntry.reported_at.desc(), Client.name)
        ).all()
    ]


def counts(clinic_id: int, now: datetime | None = None) -> dict[str, int]:
    """Return how many items of each kind need attention (and the total under "all")."""
    found = items(clinic_id, now)
    result = {kind: 0 for kind in KINDS}
    for item in found:
        result[item.kind] += 1
    result["all"] = len(found)
    return result


def mark_handled(email: Email, by: User) -> None:
    """Take an email off the Needs attention page: a clinician dealt with it another way."""
    if email.handled_at is None:
        email.handled_at = utcnow()
        email.handled_by_id = by.id
        audit.record(
            "email.handled",
            by,
            clinic_id=email.clinic_id,
            subject_type="email",
            subject_id=email.id,
        )
        db.session.commit()
