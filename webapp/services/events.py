"""Apply provider events to emails: store each once, derive the status from the whole set."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from webapp import statuses
from webapp.extensions import db
from webapp.models import Client, Email, EmailEvent, PendingEvent, SpamListEntry, utcnow
from webapp.providers.base import ProviderEvent
from webapp.services import changes

log = logging.getLogger(__name__)

# Provider drop reasons that mean the address is on the spam-report list.
SPAM_DROP_REASONS = ("spam reporting address",)


def _insert(model: type) -> sa.Insert:
    """Return an INSERT that understands ON CONFLICT, for the database in use."""
    dialect = db.session.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(model)


def insert_ignoring_duplicates(model: type, rows: list[dict]) -> int:
    """Insert rows, skipping any whose unique key is already stored; return how many went in."""
    if not rows:
        return 0
    statement = _insert(model).values(rows).on_conflict_do_nothing().returning(model.id)
    return len(db.session.execute(statement).all())


def apply_events(email: Email, events: Iterable[ProviderEvent], source: str) -> bool:
    """Store new events of one email and recompute its status; return whether anything changed.

    The caller commits, and goes through several emails in the order of their ids so that
    concurrent pollers and webhook jobs take row locks in one order. Replaying the same events
    in any order, from either source, gives the same status and the same timeline.
    """
    events = list(events)
    _lock(email)
    rows = list(
        {row["dedupe_key"]: row for row in (_event_row(email.id, e, source) for e in events)}.values()
    )
    inserted = _insert_new_events(rows)
    upgraded = _prefer_webhook_copies([row for row in rows if row["dedupe_key"] not in inserted])
    if not inserted and not upgraded:
        return False
    recompute_status(email)
    for event in events:
        if event.kind == "spamreport" or _is_spam_drop(event):
            add_to_spam_list(email.to_address, event.occurred_at, email, source)
    changes.mark_changed(email)
    return True


def _insert_new_events(rows: list[dict]) -> set[str]:
    """Insert the events not stored yet; return their dedupe keys."""
    if not rows:
        return set()
    statement = _insert(EmailEvent).values(rows).on_conflict_do_nothing().returning(EmailEvent.dedupe_key)
    return set(db.session.execute(statement).scalars())


def _prefer_webhook_copies(rows: list[dict]) -> int:
    """Let the webhook's copy of an event replace the polled one: only it carries the machine-open
    flag and the receiving server's full answer. Return how many stored events changed."""
    upgraded = 0
    for row in rows:
        if row["source"] != "webhook":
            continue
        result = db.session.execute(
            sa.update(EmailEvent)
            .where(EmailEvent.dedupe_key == row["dedupe_key"], EmailEvent.source != "webhook")
            .values(
                source="webhook", reason=row["reason"], url=row["url"], machine=row["machine"], raw=row["raw"]
            )
        )
        upgraded += result.rowcount or 0
    return upgraded


def recompute_status(email: Email) -> None:
    """Set the email's status to the highest rank among its stored events."""
    stored = db.session.execute(
        sa.select(EmailEvent.kind, sa.func.min(EmailEvent.occurred_at))
        .where(EmailEvent.email_id == email.id)
        .group_by(EmailEvent.kind)
    ).all()
    first_seen = {kind: when for kind, when in stored}
    status = statuses.current_status(list(first_seen))
    reached = [when for kind, when in first_seen.items() if statuses.status_for_event(kind) == status]
    email.status = status.key
    email.status_changed_at = min(reached) if reached else email.created_at
    if status.final:
        email.next_poll_at = None


def add_to_spam_list(address: str, reported_at: datetime, email: Email | None, source: str) -> None:
    """Record that this address is on the provider's spam-report list (once)."""
    address = address.strip().lower()
    added = insert_ignoring_duplicates(
        SpamListEntry,
        [
            {
                "address": address,
                "reported_at": reported_at,
                "email_id": email.id if email else None,
                "source": source,
            }
        ],
    )
    if added:
        # The list is shared by every clinic: each open file with this address must show the block.
        spam_list_changed([address])


def spam_list_changed(addresses: Iterable[str]) -> None:
    """Tell open client files with these addresses to refresh (banner, mark, send form)."""
    addresses = {address.strip().lower() for address in addresses}
    if not addresses:
        return
    holders = db.session.execute(
        sa.select(Client.clinic_id, Client.id).where(sa.func.lower(Client.email).in_(addresses))
    ).all()
    changes.mark_logs_changed(db.session, [(row.clinic_id, row.id) for row in holders])


def keep_for_later(events: Iterable[ProviderEvent]) -> int:
    """Keep events whose email we do not know yet; return how many were new."""
    rows = [
        {
            "app_message_id": event.app_message_id or "",
            "dedupe_key": event.dedupe_key,
            "payload": event.to_dict(),
            "received_at": utcnow(),
        }
        for event in events
    ]
    return insert_ignoring_duplicates(PendingEvent, list({row["dedupe_key"]: row for row in rows}.values()))


def _event_row(email_id: int, event: ProviderEvent, source: str) -> dict:
    return {
        "email_id": email_id,
        "occurred_at": event.occurred_at,
        "kind": event.kind if event.kind in statuses.STATUS_FOR_EVENT else "unknown",
        "reason": _text(event.reason),
        "url": _text(event.url),
        "attempt": event.attempt,
        "machine": event.machine,
        "source": source,
        "raw": _without_nul(event.raw) or None,
        "dedupe_key": event.dedupe_key,
        "created_at": utcnow(),
    }


def _text(value: str | None) -> str | None:
    """PostgreSQL text cannot hold NUL characters; a provider's string may."""
    return value.replace("\x00", "") if value is not None else None


def _without_nul(value: Any) -> Any:
    """Drop NUL characters anywhere in a raw payload (PostgreSQL's JSONB refuses them)."""
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {_without_nul(key): _without_nul(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_without_nul(item) for item in value]
    return value


def _is_spam_drop(event: ProviderEvent) -> bool:
    return event.kind == "dropped" and (event.reason or "").strip().lower() in SPAM_DROP_REASONS


def _lock(email: Email) -> None:
    """Serialise status recomputation of one email across workers (no-op on SQLite)."""
    db.session.execute(sa.select(Email.id).where(Email.id == email.id).with_for_update())
