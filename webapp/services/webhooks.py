"""Provider event batches: store verified bodies first, apply them in a job."""

from __future__ import annotations

import hashlib
import logging
import math
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime, timedelta

import sqlalchemy as sa
from flask import current_app
from redis.exceptions import RedisError

from webapp.extensions import db
from webapp.models import Email, PendingEvent, WebhookBatch, utcnow
from webapp.providers import webhook_parser
from webapp.providers.base import ProviderEvent
from webapp.services.events import CHUNK, Target, among, keep_for_later, store_events
from webapp.services.polling import schedule_next_poll

log = logging.getLogger(__name__)

APPLY_JOB = "jobs.webhooks.apply_webhook_batch"
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
    db.session.commit()
    return batch


def apply_batch(batch_id: int) -> int:
    """Apply one stored batch (again, harmlessly, if it already was); return emails changed."""
    batch = db.session.get(WebhookBatch, batch_id)
    if batch is None:
        return 0
    changed = apply_provider_events(webhook_parser(batch.provider)(batch.body), source="webhook")
    batch.applied_at = batch.applied_at or utcnow()
    db.session.commit()
    return changed


def apply_provider_events(events: Iterable[ProviderEvent], source: str) -> int:
    """Apply events to the emails they name, in a handful of statements whatever their number;
    keep the others for later. Return how many emails changed. The caller commits."""
    by_message: dict[str, list[ProviderEvent]] = defaultdict(list)
    for event in events:
        by_message[event.app_message_id or ""].append(event)
    named = [key for key in by_message if key]
    known: dict[str, sa.Row] = {}
    for start in range(0, len(named), CHUNK):
        # Look up and lock in one statement, in id order, like the poller: concurrent writers
        # then lock emails in one order.
        known.update(
            (row.app_message_id, row)
            for row in db.session.execute(
                sa.select(
                    Email.id,
                    Email.app_message_id,
                    Email.clinic_id,
                    Email.client_id,
                    Email.to_address,
                    Email.send_state,
                )
                .where(among(Email.app_message_id, named[start : start + CHUNK]))
                .order_by(Email.id)
                .with_for_update()
            )
        )
    keep_for_later([event for key, chunk in by_message.items() if key not in known for event in chunk])
    for row in known.values():
        if row.send_state in ("sending", "in_doubt", "queued"):
            email = db.session.get(Email, row.id)
            if email is not None:
                _accepted_on_evidence(email, by_message[row.app_message_id])
    batch = {
        row.id: (Target(row.id, row.clinic_id, row.client_id, row.to_address), by_message[key])
        for key, row in known.items()
    }
    return len(store_events(batch, source))


def _accepted_on_evidence(email: Email, events: list[ProviderEvent]) -> None:
    """An event from the provider proves it accepted the message: record that, and its id."""
    email.send_state = "accepted"
    email.in_doubt_since = None
    email.next_attempt_at = None
    provider_ids = [event.provider_message_id for event in events if event.provider_message_id]
    if provider_ids and not email.provider_message_id:
        # The per-recipient id starts with the id of the send request (X-Message-Id).
        email.provider_message_id = provider_ids[0].split(".", 1)[0]
    schedule_next_poll(email, utcnow())


def adopt_pending_events(now: datetime) -> int:
    """Apply kept events whose email is now known; forget those kept too long."""
    pending = list(
        db.session.execute(
            sa.select(PendingEvent).join(Email, Email.app_message_id == PendingEvent.app_message_id)
        ).scalars()
    )
    changed = apply_provider_events([ProviderEvent.from_dict(row.payload) for row in pending], "webhook")
    for row in pending:
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
        sa.delete(WebhookBatch).where(WebhookBatch.applied_at < now - KEEP_UNKNOWN_FOR)
    )
    db.session.commit()
    return result.rowcount or 0
