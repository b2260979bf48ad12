"""Apply provider events to emails: store each once, derive the status from the whole set.

Set-based: a batch of events for many emails costs a handful of statements whatever its size
(lock the touched emails once, in id order; insert every event with ON CONFLICT DO NOTHING;
move every touched email's status on by its new events in one UPDATE, event_statuses.py; bump
change counters once).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa

from webapp.extensions import db
from webapp.freshness import counters
from webapp.intake_text import storable_json
from webapp.models import Client, Email, EmailEvent, PendingEvent, SpamListEntry, utcnow
from webapp.providers.base import EventKind, ProviderEvent
from webapp.services import event_statuses
from webapp.services.bulk_sql import (
    CHUNK,
    among,
    chunks,
    insert_ignoring_duplicates,
    insert_statement,
    on_postgres,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Target:
    """What storing events needs to know of one email (no ORM object required)."""

    id: int
    clinic_id: int
    client_id: int
    to_address: str


def apply_events(email: Email, events: Iterable[ProviderEvent], source: str) -> bool:
    """Store new events of one email and recompute its status; return whether anything changed.

    The caller commits. Replaying the same events in any order, from either source, gives the
    same status and the same timeline.
    """
    events = list(events)
    if email.id not in lock_emails([email.id]):
        return False  # purged meanwhile: no event outlives its email (email_event has no foreign key)
    target = Target(email.id, email.clinic_id, email.client_id, email.to_address)
    return bool(store_events({email.id: (target, events)}, source))


def lock_emails(email_ids: Iterable[int]) -> set[int]:
    """Serialise status recomputation across workers: lock rows once, in id order (no lock on
    SQLite). Return the ids still there: the caller stores events for those alone."""
    ids = sorted(set(email_ids))
    locked: set[int] = set()
    for chunk in chunks(ids):
        locked.update(
            db.session.execute(
                sa.select(Email.id).where(among(Email.id, chunk)).order_by(Email.id).with_for_update()
            ).scalars()
        )
    return locked


def store_events(batch: dict[int, tuple[Target, list[ProviderEvent]]], source: str) -> set[int]:
    """Store the new events of many emails (locked by the caller) and recompute their statuses.

    Returns the ids of the emails whose status or timeline changed. The caller commits.
    """
    db.session.flush()  # the statements below bypass the ORM: write its pending changes first
    rows: dict[str, dict] = {}
    now = utcnow()
    for email_id, (_, events) in batch.items():
        for event in events:
            row = _event_row(email_id, event, source, now)
            kept = rows.get(row["dedupe_key"])
            # Two copies of one event in a batch: keep the same one whatever their order.
            if kept is None or _preference(row) > _preference(kept):
                rows[row["dedupe_key"]] = row
    if not rows:
        return set()
    inserted = _insert_new_events(list(rows.values()))
    upgraded = _prefer_better_copies([row for key, row in rows.items() if key not in inserted])
    fresh = [rows[key] for key in inserted]
    touched = {row["email_id"] for row in fresh} | upgraded
    if not touched:
        return set()
    if on_postgres():
        event_statuses.advance_statuses(fresh, touched)
    else:
        event_statuses.recompute_statuses(sorted(touched))
    spam = {}
    for email_id in touched:
        target, events = batch[email_id]
        for event in events:
            if event.kind == EventKind.REPORTED_AS_SPAM or _is_spam_drop(event):
                address = target.to_address.strip().lower()
                # The earliest report wins, whatever the order of arrival.
                if address not in spam or event.occurred_at < spam[address]["reported_at"]:
                    spam[address] = _spam_row(address, event.occurred_at, email_id, source)
    if insert_ignoring_duplicates(SpamListEntry, list(spam.values())):
        # The list is shared by every clinic: each open file with these addresses must show it.
        spam_list_changed(spam)
    counters.mark_logs_changed(
        db.session, {(batch[email_id][0].clinic_id, batch[email_id][0].client_id) for email_id in touched}
    )
    return touched


def _preference(row: dict) -> tuple[bool, bool]:
    """Which copy of one event the timeline keeps: the webhook's (only it carries the machine-open
    flag and the receiving server's full answer), and of a machine and a human open in the same
    second, the human one (a person opened it). A total order, so arrival order never matters."""
    return (row["source"] == "webhook", not row["machine"])


def _insert_new_events(rows: list[dict]) -> set[str]:
    """Insert the events not stored yet; return their dedupe keys."""
    if on_postgres():
        # One statement of fixed text and one JSON parameter: a multi-row VALUES list would cost
        # more to build and parse than to run, and so would a text array per column.
        document = _json_document(rows)
        if "\\u0000" in document:  # rare: clean every string, then write the document again
            document = _json_document(storable_json(rows))
        return set(db.session.execute(_RECORDSET_INSERT, {"rows": document}).scalars().all())
    statement = insert_statement(EmailEvent).on_conflict_do_nothing().returning(EmailEvent.dedupe_key)
    inserted: set[str] = set()
    rows = storable_json(rows)
    for start in range(0, len(rows), CHUNK):
        inserted.update(db.session.execute(statement, rows[start : start + CHUNK]).scalars())
    return inserted


_EVENT_COLUMNS = {
    "email_id": "int",
    "occurred_at": "timestamptz",
    "kind": "text",
    "reason": "text",
    "reject_reason": "text",
    "url": "text",
    "attempt": "int",
    "machine": "bool",
    "source": "text",
    "raw": "jsonb",
    "dedupe_key": "text",
    "created_at": "timestamptz",
}
_RECORDSET_SELECTED = {name: name for name in _EVENT_COLUMNS} | {"dedupe_key": "decode(dedupe_key, 'hex')"}
_RECORDSET_INSERT = sa.text(
    f"INSERT INTO email_event ({', '.join(_EVENT_COLUMNS)}) SELECT {', '.join(_RECORDSET_SELECTED.values())} "
    "FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS rows("
    + ", ".join(f"{name} {kind}" for name, kind in _EVENT_COLUMNS.items())
    + ") ON CONFLICT (email_id, dedupe_key) DO NOTHING RETURNING encode(dedupe_key, 'hex')"
)


def _json_document(rows: list[dict]) -> str:
    """The rows as one JSON text: orjson writes datetimes itself (about a fifth of the standard
    module's time here); a value it refuses (an integer past 64 bits in a polled event) falls back."""
    try:
        return orjson.dumps(rows).decode()
    except orjson.JSONEncodeError:
        # A lone surrogate (orjson refuses it, and so would PostgreSQL) or an integer past 64 bits.
        return json.dumps(storable_json(rows), default=_json_time)


def _json_time(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _prefer_better_copies(rows: list[dict]) -> set[int]:
    """Let a preferred copy of an event replace the stored one; return the emails that changed."""
    if not rows:
        return set()
    by_key = {row["dedupe_key"]: row for row in rows}
    table = EmailEvent.__table__
    stored = []
    keys = list(by_key)
    for chunk_keys in chunks(keys):
        chunk = [by_key[key] for key in chunk_keys]
        # Both columns of the unique key, so the lookup walks that index.
        stored += db.session.execute(
            sa.select(EmailEvent.id, EmailEvent.dedupe_key, EmailEvent.source, EmailEvent.machine).where(
                among(EmailEvent.email_id, {row["email_id"] for row in chunk}),
                among(EmailEvent.dedupe_key, [row["dedupe_key"] for row in chunk]),
            )
        ).all()
    stored = [row for row in stored if row.dedupe_key in by_key]
    better = [
        (row.id, by_key[row.dedupe_key])
        for row in stored
        if _preference(by_key[row.dedupe_key]) > _preference({"source": row.source, "machine": row.machine})
    ]
    if not better:
        return set()
    db.session.execute(
        sa.update(table)
        .where(table.c.id == sa.bindparam("event_id"))
        .values(
            source=sa.bindparam("new_source"),
            reason=sa.bindparam("new_reason"),
            reject_reason=sa.bindparam("new_reject_reason"),
            url=sa.bindparam("new_url"),
            machine=sa.bindparam("new_machine"),
            raw=sa.bindparam("new_raw"),
        ),
        [
            {
                "event_id": event_id,
                "new_source": row["source"],
                "new_reason": row["reason"],
                "new_reject_reason": row["reject_reason"],
                "new_url": row["url"],
                "new_machine": row["machine"],
                "new_raw": row["raw"],
            }
            for event_id, row in ((event_id, storable_json(row)) for event_id, row in better)
        ],
    )
    return {row["email_id"] for _, row in better}


def add_to_spam_list(address: str, reported_at: datetime, email: Email | None, source: str) -> None:
    """Record that this address is on the provider's spam-report list (once)."""
    address = address.strip().lower()
    added = insert_ignoring_duplicates(
        SpamListEntry, [_spam_row(address, reported_at, email.id if email else None, source)]
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
    counters.mark_logs_changed(db.session, [(row.clinic_id, row.id) for row in holders])


def _spam_row(address: str, reported_at: datetime, email_id: int | None, source: str) -> dict:
    return {"address": address, "reported_at": reported_at, "email_id": email_id, "source": source}


def keep_for_later(events: Iterable[ProviderEvent]) -> int:
    """Keep events whose email we do not know yet; return how many were new."""
    now = utcnow()
    rows = [
        {
            "app_message_id": event.app_message_id or "",
            "provider_message_id": event.provider_message_id,
            "dedupe_key": event.dedupe_key,
            "payload": event.to_dict(),
            "received_at": now,
        }
        for event in events
    ]
    unique = list({row["dedupe_key"]: row for row in rows}.values())
    return insert_ignoring_duplicates(PendingEvent, storable_json(unique))


def stored_key(dedupe_key: str) -> str:
    """The part of ProviderEvent.dedupe_key an event row keeps (column_types.Digest): its first 16 bytes,
    in hex; unique per email, so 128 bits leave no room for two events of one email to collide."""
    return dedupe_key[:32]


def _event_row(email_id: int, event: ProviderEvent, source: str, now: datetime | None = None) -> dict:
    return {
        "email_id": email_id,
        "occurred_at": event.occurred_at,
        "kind": event.kind.value,  # one of the closed set: ProviderEvent refuses any other
        "reason": event.reason,
        "reject_reason": event.reject_reason,
        "url": event.url,
        "attempt": event.attempt,
        "machine": event.machine,
        "source": source,
        "raw": event.raw or None,
        "dedupe_key": stored_key(event.dedupe_key),
        "created_at": now or utcnow(),
    }


def _is_spam_drop(event: ProviderEvent) -> bool:
    """Whether the provider would not send because the address reported spam (dropped after
    acceptance, or refused at send time as Postmark does)."""
    return event.kind in (EventKind.DROPPED, EventKind.REJECTED) and event.reject_reason == "spam_report"
