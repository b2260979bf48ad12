"""Needs attention: what a clinic's clinicians must act on, the most urgent first.

An appointment at risk (its reminder or intake form failed, is blocked, or is still not delivered
24 hours before) comes first, with "call the client"; then failed emails, clients blocked by a
spam report, stuck emails and deferrals older than an hour, each with its next step.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from flask import current_app
from redis.exceptions import RedisError

from webapp import statuses
from webapp.extensions import db
from webapp.freshness import counters
from webapp.models import Client, Email, SpamListEntry, User, utcnow
from webapp.services import audit, clients, log_rows, next_steps
from webapp.services.address_health import provider_lifts_pending
from webapp.services.timelines import failure_reason

# An appointment email not delivered this long before the appointment: call the client.
CALL_BEFORE = timedelta(hours=24)
# A deferral is normal for a while; after this long the clinician should know.
DEFERRED_FOR = timedelta(hours=1)
NOT_YET = (statuses.SENDING.key, statuses.PROCESSED.key, statuses.DEFERRED.key)
# The navigation's total is kept this long at most (unless a log of the clinic changes first):
# it bounds how late an item that time alone brings (stuck, an hour's deferral, 24 hours before
# an appointment) shows in the count. The Needs attention page itself is always computed.
COUNT_TTL_SECONDS = 15
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
    support_now: bool = False  # stuck, and sent over an hour ago: contact support now
    resend_to: str = ""  # failed at an address since corrected: the address on file to resend to
    dealt: bool = False  # just marked as dealt with, shown in its place with an undo

    @property
    def key(self) -> str:
        """A stable anchor for the item on the page."""
        return f"{self.kind}-{self.email.id if self.email else self.client.id}"


def _candidates(clinic_id: int, now: datetime, dealt: int | None = None) -> sa.ColumnElement[bool]:
    """The emails that may need attention (the rules of _kind_of then decide); `dealt`: an email
    marked as dealt with that is wanted too."""
    stuck_before = now - timedelta(seconds=statuses.STUCK_AFTER_SECONDS)
    not_handled = Email.handled_at.is_(None)
    return sa.and_(
        Email.clinic_id == clinic_id,
        not_handled if dealt is None else sa.or_(not_handled, Email.id == dealt),
        Email.created_at >= now - timedelta(days=clients.LOG_DAYS),
        sa.or_(
            Email.status == statuses.FAILED.key,
            sa.and_(
                Email.status.in_((statuses.SENDING.key, statuses.PROCESSED.key)),
                Email.status_known_at <= stuck_before,
            ),
            sa.and_(Email.status == statuses.DEFERRED.key, Email.status_changed_at <= now - DEFERRED_FOR),
            sa.and_(
                Email.status.in_(NOT_YET),
                Email.appointment_at > now,
                Email.appointment_at <= now + CALL_BEFORE,
            ),
        ),
    )


def _kind_of(email: Any, now: datetime, to_blocked: bool) -> tuple[str, datetime, str] | None:
    """Say what needs doing about a candidate email (an Email or a row with its columns): the
    item's kind, since when, and for an appointment why; None when nothing does."""
    at_risk = email.appointment_at is not None and email.appointment_at > now
    if at_risk and email.status == statuses.FAILED.key:
        return "appointment", email.status_changed_at, "blocked" if to_blocked else "failed"
    if at_risk and email.status in NOT_YET and email.appointment_at - CALL_BEFORE <= now:
        return "appointment", email.appointment_at - CALL_BEFORE, "not_delivered"
    if email.status == statuses.FAILED.key:
        # The blocked client's own item says what to do.
        return None if to_blocked else ("failed", email.status_changed_at, "")
    if next_steps.is_stuck(email, now):
        return "stuck", email.status_changed_at, ""
    if email.status == statuses.DEFERRED.key and email.status_changed_at <= now - DEFERRED_FOR:
        return "deferred", email.status_changed_at, ""
    return None


def items(clinic_id: int, now: datetime | None = None, dealt: int | None = None) -> list[Item]:
    """Return what needs attention at the clinic, most urgent first; with `dealt`, that email too
    if it was marked as dealt with and would need attention otherwise (its undo is offered)."""
    now = now or utcnow()
    emails = list(
        db.session.execute(
            sa.select(Email)
            .where(_candidates(clinic_id, now, dealt))
            .options(sa.orm.joinedload(Email.client), sa.orm.selectinload(Email.events))
            .order_by(Email.created_at.desc(), Email.id.desc())
        )
        .unique()
        .scalars()
    )
    failed = [email for email in emails if email.status == statuses.FAILED.key]
    resent = log_rows.resent_ids(clinic_id, [email.id for email in failed])
    later = log_rows.later_copies(clinic_id, failed, now)
    blocked = blocked_clients(clinic_id)
    blocked_addresses = {client.email.strip().lower() for client, _ in blocked}
    found: list[Item] = []
    for email in emails:
        if email.id in resent or email.id in later:
            continue  # a resend or a later copy carries it now
        kind = _kind_of(email, now, email.to_address.strip().lower() in blocked_addresses)
        if kind is not None:
            name, since, reason = kind
            if name == "failed":
                reason = failure_reason(email)
            client = email.client
            resend_to = next_steps.resend_to_file(
                email, client.email, client.email.strip().lower() in blocked_addresses
            )
            found.append(
                Item(
                    name,
                    client,
                    email,
                    since,
                    reason,
                    support_now=next_steps.support_now(email, now),
                    resend_to=resend_to,
                    dealt=email.handled_at is not None,
                )
            )
    # An approved request the provider must still lift (Postmark): the clinic has nothing to do.
    waiting = provider_lifts_pending(blocked_addresses)
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
    """Return how many items of each kind need attention (and the total under "all").

    The same rules as items(), on plain rows: every page's navigation shows the total, and
    building the items (their clients, events and reasons) cost a big clinic's pages most of
    their time.
    """
    now = now or utcnow()
    later, resend = sa.orm.aliased(Email), sa.orm.aliased(Email)
    # Per failed email, an index scan on (client_id, created_at) and one on the partial index of
    # resend_of_id (migration 0019). Asked apart, the resends cost a statement with one parameter
    # per failed email (757 in a big clinic: 15 to 30 ms of building and parsing it in Python for
    # 0.4 ms in PostgreSQL); without the index, an EXISTS cost the planner's estimate enough to
    # make stock PostgreSQL JIT-compile the query (about 45 ms for a 4 ms query).
    was_resent = sa.exists().where(resend.resend_of_id == Email.id, resend.clinic_id == clinic_id)
    has_later_copy = sa.exists().where(
        later.clinic_id == clinic_id,
        later.client_id == Email.client_id,
        later.kind == Email.kind,
        later.subject == Email.subject,
        later.status.in_(log_rows.REACHED),
        later.created_at > Email.created_at,
        later.created_at >= now - timedelta(days=clients.LOG_DAYS),
    )
    carried = sa.or_(was_resent, has_later_copy)
    rows = db.session.execute(
        sa.select(
            Email.id,
            Email.status,
            Email.status_changed_at,
            Email.status_received_at,
            Email.appointment_at,
            Email.to_address,
            sa.case((Email.status == statuses.FAILED.key, carried), else_=sa.false()).label("carried"),
        ).where(_candidates(clinic_id, now))
    ).all()
    blocked = list(
        db.session.execute(
            sa.select(Client.email)
            .join(SpamListEntry, SpamListEntry.address == sa.func.lower(Client.email))
            .where(Client.clinic_id == clinic_id)
        ).scalars()
    )
    blocked_addresses = {address.strip().lower() for address in blocked}
    result = {kind: 0 for kind in KINDS}
    result["blocked"] = len(blocked)  # one item per blocked client, as in items()
    for row in rows:
        if row.carried:
            continue  # a resend or a later copy carries it now
        kind = _kind_of(row, now, row.to_address.strip().lower() in blocked_addresses)
        if kind is not None:
            result[kind[0]] += 1
    result["all"] = sum(result.values())
    return result


def navigation_count(clinic_id: int) -> int:
    """Return the total for the navigation of every page, from Redis when a recent one is there."""
    key = counters.attention_count_key(clinic_id)
    redis = current_app.extensions["redis"]
    try:
        cached = redis.get(key)
    except RedisError:
        cached = None
    if cached is not None:
        return int(cached)
    total = counts(clinic_id)["all"]
    with contextlib.suppress(RedisError):
        redis.set(key, total, ex=COUNT_TTL_SECONDS)
    return total


def mark_handled(email: Email, by: User) -> None:
    """Take an email off the Needs attention page: a clinician dealt with it another way."""
    if email.handled_at is None:
        email.handled_at = utcnow()
        email.handled_by_id = by.id
        _changed(email, "email.handled", by)


def undo_handled(email: Email, by: User) -> bool:
    """Put an email marked as dealt with back on the Needs attention page (a mis-tap); return
    whether it was marked."""
    if email.handled_at is None:
        return False
    email.handled_at = None
    email.handled_by_id = None
    _changed(email, "email.handled_undone", by)
    return True


def _changed(email: Email, action: str, by: User) -> None:
    """Audit a change of whether an email needs attention, commit it, and forget the cached count."""
    audit.record(action, by, clinic_id=email.clinic_id, subject_type="email", subject_id=email.id)
    db.session.commit()
    with contextlib.suppress(RedisError):
        current_app.extensions["redis"].delete(counters.attention_count_key(email.clinic_id))
