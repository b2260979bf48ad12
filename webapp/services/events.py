"""Apply provider events to emails: store each once, derive the status from the whole set."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from webapp import statuses
from webapp.extensions import db
from webapp.models import Email, EmailEvent, PendingEvent, SpamListEntry, utcnow
from webapp.providers.base import ProviderEvent
from webapp.services import changes

log = logging.getLogger(__name__)

# Provider drop reasons that mean the address is on the spam-report list.
SPAM_DROP_REASONS = ("spam reporting address",)


def insert_ignoring_duplicates(model: type, rows: list[dict]) -> int:
    """Insert rows, skipping any whose unique key is already stored; return how many went in."""
    if not rows:
        return 0
    dialect = db.session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(model).values(rows).on_conflict_do_nothing().returning(model.id)
    return len(db.session.execute(statement).all())


def apply_events(email: Email, events: Iterable[ProviderEvent], source: str) -> bool:
    """Store new events of one email and recompute its status; return whether anything changed.

    The caller commits. Replaying the same events in any order gives the same result.
    """
    events = list(events)
    rows = [_event_row(email.id, event, source) for event in events]
    unique_rows = list({row["dedupe_key"]: row for row in rows}.values())
    if not insert_ignoring_duplicates(EmailEvent, unique_rows):
        return False
    _lock(email)
    recompute_status(email)
    for event in events:
        if event.kind == "spamreport" or _is_spam_drop(event):
            add_to_spam_list(email.to_address, event.occurred_at, email, source)
    changes.mark_changed(email)
    return True


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
    insert_ignoring_duplicates(
        SpamListEntry,
        [
            {
                "address": address.strip().lower(),
                "reported_at": reported_at,
                "email_id": email.id if email else None,
                "source": source,
            }
        ],
    )


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
        "reason": event.reason,
        "url": event.url,
        "attempt": event.attempt,
        "machine": event.machine,
        "source": source,
        "raw": event.raw or None,
        "dedupe_key": event.dedupe_key,
        "created_at": utcnow(),
    }


def _is_spam_drop(event: ProviderEvent) -> bool:
    return event.kind == "dropped" and (event.reason or "").strip().lower() in SPAM_DROP_REASONS


def _lock(email: Email) -> None:
    """Serialise status recomputation of one email across workers (no-op on SQLite)."""
    db.session.execute(sa.select(Email.id).where(Email.id == email.id).with_for_update())
