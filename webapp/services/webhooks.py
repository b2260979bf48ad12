"""Provider event batches: store verified bodies first, apply them in a job."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

import sqlalchemy as sa
import sqlalchemy.orm as so
from flask import current_app
from redis.exceptions import RedisError

from webapp.extensions import db
from webapp.models import Email, PendingEvent, WebhookBatch, utcnow
from webapp.providers import webhook_parser
from webapp.providers.base import ProviderEvent
from webapp.services import clock_skew, set_aside
from webapp.services.events import Target, among, chunks, keep_for_later, store_events
from webapp.services.polling import schedule_next_poll

log = logging.getLogger(__name__)

APPLY_JOB = "jobs.webhooks.apply_webhook_batch"
# Stored batches one job applies together at most. More per job shares a job's fixed costs and
# recomputes an email with events in several batches once (in-process, 10 took 72 ms of Python per
# 1,000 events against 82), but end to end with two workers 10 measured 2,016 to 5,797 events/s and
# 1 measured 4,610 to 5,261: a bigger transaction holds its emails longer, and the other worker's
# second step waits for it. So a job applies the batch it was queued for, unless another job has it.
BATCHES_PER_JOB = 1
# Events for an email we do not know are kept this long, in case its send record is late.
KEEP_UNKNOWN_FOR = timedelta(days=7)


def first_delivery(provider: str, replay_key: str, ttl: float) -> bool:
    """Remember a verified delivery for ttl seconds; return False when it came before.

    replay_key comes from the provider's verdict (WebhookVerdict): for SendGrid, a digest of what
    was signed, not of the signature (an ECDSA signature has a twin that verifies as well).
    """
    key = _delivery_key(provider, replay_key)
    ttl = max(1, math.ceil(ttl))
    try:
        return bool(current_app.extensions["redis"].set(key, b"1", nx=True, ex=ttl))
    except RedisError as error:
        # Storing a batch twice is harmless (events are stored once each); losing one is not.
        log.warning("webhook replay check unavailable, storing the batch: %s", error)
        return True


def forget_delivery(provider: str, replay_key: str) -> None:
    """Forget a delivery we failed to store, so that the provider's retry is taken."""
    try:
        current_app.extensions["redis"].delete(_delivery_key(provider, replay_key))
    except RedisError as error:
        log.warning("could not forget a webhook delivery: %s", error)


def _delivery_key(provider: str, replay_key: str) -> str:
    # Hashed again: the key is the provider's to choose, and a Redis key should stay short.
    return f"webhook-seen:{provider}:{hashlib.sha256(replay_key.encode()).hexdigest()}"


def store_batch(provider: str, body: bytes) -> WebhookBatch:
    """Keep a verified webhook body until a job applies it; provider names its wire format."""
    batch = WebhookBatch(provider=provider, body=body, received_at=utcnow())
    db.session.add(batch)
    db.session.flush()
    batch_id = batch.id
    db.session.commit()
    so.attributes.set_committed_value(batch, "id", batch_id)  # no query after the commit: it may fail
    return batch


def apply_batch(batch_id: int, more: int | None = None) -> int:
    """Apply a stored batch and up to `more` other unapplied ones, together; return emails changed.

    A batch that is already applied, or that another job is applying, is left alone. Applying is
    idempotent: a job that dies mid-way leaves its batches unapplied, and the sweep applies them
    again.
    """
    more = BATCHES_PER_JOB - 1 if more is None else more
    with _claimed(batch_id, more) as claimed:
        if not claimed:
            return 0
        _without_waiting_for_disk()
        batches = db.session.execute(
            sa.select(WebhookBatch.id, WebhookBatch.provider, WebhookBatch.body)
            .where(among(WebhookBatch.id, claimed), WebhookBatch.applied_at.is_(None))
            .order_by(WebhookBatch.id)
        ).all()
        parsed: dict[int, list[ProviderEvent]] = {}
        for batch in batches:
            try:
                parsed[batch.id] = webhook_parser(batch.provider)(batch.body)
            except (ValueError, KeyError):
                # The route checked it, so this is a bug or a lost parser: keep the batch (the sweep
                # alerts once it is late), and do not hold back the ones that came with it.
                log.exception("stored webhook batch %s cannot be read; left unapplied", batch.id)
        if not parsed:
            db.session.rollback()
            return 0
        try:
            return _apply_together(parsed)
        except Exception as error:
            db.session.rollback()
            if not set_aside.bad_data(error):
                raise
            # An event the database refuses: apply the others, set it aside (kept, and alerted).
            return set_aside.apply_apart(parsed, lambda events: apply_provider_events(events, "webhook"))


def _apply_together(parsed: dict[int, list[ProviderEvent]]) -> int:
    """Apply the events of these batches in one go and mark the batches applied; commit."""
    events = [event for batch_events in parsed.values() for event in batch_events]
    # Batches mix emails, so two jobs at once share some: waiting for the other's row locks
    # (held to its commit) serialised them. First the emails nobody holds, committed without
    # waiting; then the rest, whose holder has mostly committed by then. If the job dies in
    # between, its batches are still unapplied and the sweep applies them again.
    changed, unknown, held = _apply_to_owners(events, "webhook", skip_held=True)
    keep_for_later(unknown)
    if held:
        db.session.commit()
        _without_waiting_for_disk()
        changed += apply_provider_events(held, source="webhook")
    db.session.execute(
        sa.update(WebhookBatch)
        .where(among(WebhookBatch.id, list(parsed)), WebhookBatch.applied_at.is_(None))
        .values(applied_at=utcnow())
    )
    db.session.commit()
    return changed


# Advisory lock namespace of "a job is applying this stored batch" (the second key is its id).
_CLAIM_NAMESPACE = 4_210_001
_CLAIM_SQL = sa.text(
    """
    WITH candidates AS MATERIALIZED (
        (SELECT id FROM webhook_batch WHERE id = :batch_id AND applied_at IS NULL)
        UNION
        (SELECT id FROM webhook_batch WHERE applied_at IS NULL AND id <> :batch_id ORDER BY id LIMIT :more)
    )
    SELECT id FROM candidates WHERE pg_try_advisory_lock(:namespace, id) ORDER BY id
    """
)
_UNCLAIM_SQL = sa.text(
    "SELECT pg_advisory_unlock(:namespace, id) FROM unnest(CAST(:ids AS int[])) AS claimed(id)"
)


@contextmanager
def _claimed(batch_id: int, more: int) -> Iterator[list[int]]:
    """Claim this batch and up to `more` other unapplied ones for the duration of the block, skipping
    any another job holds; yield their ids.

    On PostgreSQL a claim is a session advisory lock on a connection of its own: it outlives the
    apply's two transactions and ends with the job's process if that dies, so the sweep can apply
    the batch again. SQLite has one writer at a time: nothing to claim against.
    """
    if db.session.get_bind().dialect.name != "postgresql":
        ids = db.session.execute(
            sa.select(WebhookBatch.id)
            .where(WebhookBatch.applied_at.is_(None), WebhookBatch.id != batch_id)
            .order_by(WebhookBatch.id)
            .limit(more)
        ).scalars()
        yield sorted({batch_id, *ids})
        return
    with db.engine.connect() as claims:
        ids: list[int] = []
        try:
            # Inside the try: a job timeout or a shutdown may strike once the server granted them.
            ids = list(
                claims.execute(
                    _CLAIM_SQL, {"batch_id": batch_id, "more": more, "namespace": _CLAIM_NAMESPACE}
                ).scalars()
            )
            claims.commit()
            yield ids
            if ids:
                claims.execute(_UNCLAIM_SQL, {"ids": ids, "namespace": _CLAIM_NAMESPACE})
                claims.commit()
        except BaseException:
            # Never back into the pool with a claim on it: closing the connection ends them all.
            claims.invalidate()
            raise


def _without_waiting_for_disk() -> None:
    """Let this transaction commit without waiting for its WAL to reach the disk (PostgreSQL).

    Safe here: the stored batch is the durable copy, and its applied_at commits with its events,
    so a crash that loses the commit leaves the batch unapplied for the sweep.
    """
    if db.session.get_bind().dialect.name == "postgresql":
        db.session.execute(sa.text("SET LOCAL synchronous_commit = off"))


def apply_provider_events(events: Iterable[ProviderEvent], source: str) -> int:
    """Apply events to the emails they name, in a handful of statements whatever their number;
    keep the others for later. Return how many emails changed. The caller commits."""
    changed, unknown, _ = _apply_to_owners(list(events), source)
    keep_for_later(unknown)
    return changed


def _apply_to_owners(
    events: list[ProviderEvent], source: str, skip_held: bool = False
) -> tuple[int, list[ProviderEvent], list[ProviderEvent]]:
    """Find each event's email (by our id, else by the provider's id and the recipient), apply
    them, and return how many emails changed, the events whose email is not known (yet) and the
    events left for later (skip_held: the emails another transaction holds locked, left without
    waiting; only when every event carries our id). The caller commits.
    """
    clock_skew.note_event_times(events)
    by_app_id: dict[str, list[ProviderEvent]] = defaultdict(list)
    by_provider_id: dict[str, list[ProviderEvent]] = defaultdict(list)
    unknown: list[ProviderEvent] = []
    for event in events:
        if event.app_message_id:
            by_app_id[event.app_message_id].append(event)
        elif event.provider_message_id:
            by_provider_id[event.provider_message_id].append(event)
        else:
            unknown.append(event)
    skip_held = skip_held and not by_provider_id
    rows = _owners(list(by_app_id), list(by_provider_id), skip_held)
    owned: dict[int, list[ProviderEvent]] = defaultdict(list)
    known_app_ids = {row.app_message_id: row for row in rows.values()}
    missing = [app_id for app_id in by_app_id if app_id not in known_app_ids]
    held_ids = _existing_app_ids(missing) if skip_held and missing else set()
    held: list[ProviderEvent] = []
    for app_id, chunk in by_app_id.items():
        row = known_app_ids.get(app_id)
        if row is not None:
            owned[row.id].extend(chunk)
        elif app_id in held_ids:
            held.extend(chunk)
        else:
            unknown.extend(chunk)
    sharing: dict[str, list[sa.Row]] = defaultdict(list)
    for row in rows.values():
        if row.provider_message_id in by_provider_id:
            sharing[row.provider_message_id].append(row)
    for provider_id, chunk in by_provider_id.items():
        for event in chunk:
            row = _owner_by_recipient(sharing.get(provider_id, []), event.recipient)
            if row is None:
                unknown.append(event)
            else:
                # Keyed on our id like every other copy of this event (polled, or with custom args).
                owned[row.id].append(dataclasses.replace(event, app_message_id=row.app_message_id))
    for email_id, chunk in owned.items():
        if rows[email_id].send_state in ("claimed", "in_doubt", "queued", "held"):
            email = db.session.get(Email, email_id)
            if email is not None:
                _accepted_on_evidence(email, chunk)
    batch = {
        email_id: (
            Target(email_id, rows[email_id].clinic_id, rows[email_id].client_id, rows[email_id].to_address),
            chunk,
        )
        for email_id, chunk in owned.items()
    }
    return len(store_events(batch, source)), unknown, held


def _existing_app_ids(app_ids: list[str]) -> set[str]:
    """Which of these ids name an email we have (without locking it)."""
    found: set[str] = set()
    for chunk in chunks(app_ids):
        query = sa.select(Email.app_message_id).where(among(Email.app_message_id, chunk))
        found.update(db.session.execute(query).scalars())
    return found


_OWNER_COLUMNS = (
    Email.id,
    Email.app_message_id,
    Email.provider_message_id,
    Email.clinic_id,
    Email.client_id,
    Email.to_address,
    Email.send_state,
)


def _owners(app_ids: list[str], provider_ids: list[str], skip_held: bool = False) -> dict[int, sa.Row]:
    """Look up and lock the emails named by our ids or by the provider's, in id order, like the
    poller: concurrent writers then lock emails in one order. skip_held (our ids only): leave out,
    without waiting, the emails another transaction holds."""
    if not provider_ids:
        # The usual case: one statement per chunk both finds and locks.
        found = {}
        for chunk in chunks(app_ids):
            found.update(
                (row.id, row)
                for row in db.session.execute(
                    sa.select(*_OWNER_COLUMNS)
                    .where(among(Email.app_message_id, chunk))
                    .order_by(Email.id)
                    .with_for_update(skip_locked=skip_held)
                )
            )
        return found
    # Some events name only the provider's id: find every owner first, then lock them all at once.
    ids: set[int] = set()
    for column, values in ((Email.app_message_id, app_ids), (Email.provider_message_id, provider_ids)):
        for chunk in chunks(values):
            ids.update(db.session.execute(sa.select(Email.id).where(among(column, chunk))).scalars())
    ordered = sorted(ids)
    found = {}
    for chunk in chunks(ordered):
        found.update(
            (row.id, row)
            for row in db.session.execute(
                sa.select(*_OWNER_COLUMNS).where(among(Email.id, chunk)).order_by(Email.id).with_for_update()
            )
        )
    return found


def _owner_by_recipient(candidates: list[sa.Row], recipient: str | None) -> sa.Row | None:
    """Pick the email of a send request that an event names: one request may carry several
    recipients (a batch), so the recipient decides; two emails to one address stay unresolved."""
    if recipient:
        address = recipient.strip().lower()
        candidates = [row for row in candidates if row.to_address.strip().lower() == address]
    return candidates[0] if len(candidates) == 1 else None


def _accepted_on_evidence(email: Email, events: list[ProviderEvent]) -> None:
    """An event from the provider proves it accepted the message: record that, and its id."""
    email.send_state = "accepted"
    email.in_doubt_since = None
    email.next_attempt_at = None
    provider_ids = [event.provider_message_id for event in events if event.provider_message_id]
    if provider_ids and not email.provider_message_id:
        email.provider_message_id = provider_ids[0]  # the send request's id, as the provider gave it
    schedule_next_poll(email, utcnow())


def adopt_pending_events(now: datetime) -> int:
    """Apply kept events whose email is now known (by our id, or by the provider's id once the
    send record has it); forget those kept too long."""
    pending = list(
        db.session.execute(
            sa.select(PendingEvent)
            .join(Email, Email.app_message_id == PendingEvent.app_message_id)
            .where(PendingEvent.app_message_id != "")
        ).scalars()
    )
    pending += db.session.execute(
        sa.select(PendingEvent).where(
            PendingEvent.app_message_id == "",
            PendingEvent.provider_message_id.in_(
                sa.select(Email.provider_message_id).where(Email.provider_message_id.is_not(None))
            ),
        )
    ).scalars()
    events = [ProviderEvent.from_dict(row.payload) for row in pending]
    changed, unknown, _ = _apply_to_owners(events, "webhook")
    # An event still without its email (two emails of one request to one address) waits on.
    waiting = {id(event) for event in unknown}
    for row, event in zip(pending, events, strict=True):
        if id(event) not in waiting:
            db.session.delete(row)
    db.session.execute(sa.delete(PendingEvent).where(PendingEvent.received_at < now - KEEP_UNKNOWN_FOR))
    db.session.commit()
    return changed


def unapplied_batches(older_than: datetime, limit: int = 200) -> list[int]:
    """Return ids of stored batches that no job has applied yet (a lost enqueue)."""
    return list(
        db.session.execute(
            sa.select(WebhookBatch.id)
            .where(WebhookBatch.applied_at.is_(None), WebhookBatch.received_at <= older_than)
            .order_by(WebhookBatch.id)
            .limit(limit)
        ).scalars()
    )


def forget_applied_batches(now: datetime) -> int:
    """Delete applied batches once their events have long been stored as timeline rows."""
    result = db.session.execute(
        # A batch with events set aside is kept as it came (retention deletes it in the end).
        sa.delete(WebhookBatch).where(
            WebhookBatch.applied_at < now - KEEP_UNKNOWN_FOR, WebhookBatch.set_aside.is_(None)
        )
    )
    db.session.commit()
    return result.rowcount or 0
