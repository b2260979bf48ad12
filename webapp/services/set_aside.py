"""Stored webhook batches that will not apply whole: apply them in pieces, set aside the events
that still fail (kept, and an operator told), and alert when a batch waits too long.

A batch's events are applied together, in one transaction. When that fails because of what an
event holds (a value the database refuses), retrying the batch would fail for ever and hold back
every good event beside the bad one. So the batch is halved until each failing piece is one event:
that event is set aside (its position in the stored body, which is kept as received) and every
other is applied. A failure of the database itself (a lost connection, a deadlock, a timeout) is
not the events' fault: it is raised, and the sweep applies the whole batch again later.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

import sqlalchemy as sa

from webapp.extensions import db
from webapp.intake_text import storable
from webapp.models import Email, OperatorAlert, WebhookBatch, utcnow
from webapp.providers.base import ProviderEvent
from webapp.services.sending import alert_operators

log = logging.getLogger(__name__)

SET_ASIDE_ALERT = "webhook_event_set_aside"
LATE_BATCH_ALERT = "webhook_batch_late"
# A stored batch is applied within seconds; one still waiting after this long needs a person.
LATE_AFTER = timedelta(minutes=5)
# Events of one batch alerted one by one; past these (a bug refusing every event, say) one alert
# counts the rest, rather than an alert per event.
ALERTS_PER_BATCH = 5


def bad_data(error: BaseException) -> bool:
    """Whether a failed apply is the events' fault (a value refused), not the database's."""
    if isinstance(error, sa.exc.DBAPIError):
        # Data exceptions (a NUL, an integer out of range, a string too long) and constraint
        # violations; not a lost connection, a deadlock, a timeout or a missing column.
        return isinstance(error, sa.exc.DataError | sa.exc.IntegrityError)
    # A value refused before it reached the database (one no encoder takes), or by our own code.
    return isinstance(error, sa.exc.StatementError | ValueError | TypeError | OverflowError | LookupError)


def apply_apart(
    events_by_batch: dict[int, list[ProviderEvent]], apply: Callable[[list[ProviderEvent]], int]
) -> int:
    """Apply each batch's events in pieces, committing each piece, and set aside every event that
    fails alone; mark the batches applied. Return how many emails changed.

    `apply` stores events (and keeps those of unknown emails) without committing. Applying is
    idempotent, so a piece applied before a failure elsewhere is simply applied again later.
    """
    log.warning(
        "stored webhook batches %s did not apply whole; applying them in pieces", list(events_by_batch)
    )
    changed = 0
    for batch_id, events in events_by_batch.items():
        pieces: list[tuple[int, list[ProviderEvent]]] = [(0, events)]
        aside: list[dict] = []
        while pieces:
            offset, piece = pieces.pop()
            try:
                changed += apply(piece)
                db.session.commit()
            except Exception as error:
                db.session.rollback()
                if not bad_data(error):
                    raise
                if len(piece) == 1:
                    aside.append(_set_aside(batch_id, offset, piece[0], error, len(aside) < ALERTS_PER_BATCH))
                    continue
                half = len(piece) // 2
                # The first half is popped first: events are applied in the order they came.
                pieces += [(offset + half, piece[half:]), (offset, piece[:half])]
        if len(aside) > ALERTS_PER_BATCH:
            alert_operators(
                SET_ASIDE_ALERT,
                f"{len(aside)} of the {len(events)} events of stored webhook batch {batch_id} could not be "
                f"stored and were set aside (the first {ALERTS_PER_BATCH} are alerted one by one; all are "
                "listed on the batch, which is kept as it was received).",
            )
        db.session.execute(
            sa.update(WebhookBatch)
            .where(WebhookBatch.id == batch_id, WebhookBatch.applied_at.is_(None))
            .values(applied_at=utcnow(), set_aside=aside or None)
        )
        db.session.commit()
        log.warning(
            "stored webhook batch %s applied in pieces: %s of %s events set aside",
            batch_id,
            len(aside),
            len(events),
        )
    return changed


def _set_aside(batch_id: int, position: int, event: ProviderEvent, error: BaseException, alert: bool) -> dict:
    """Tell operators (when `alert`) about one event that cannot be stored; return what the batch
    keeps of it."""
    reason = _first_line(error)
    if not alert:
        return {"position": position, "kind": event.kind, "error": reason}
    email = None
    if event.app_message_id:
        email = db.session.execute(
            sa.select(Email).where(Email.app_message_id == event.app_message_id)
        ).scalar_one_or_none()
    named = storable(event.app_message_id or "")[:40] or "?"
    about = f"email {email.reference}" if email else f"message {named}"
    alert_operators(
        SET_ASIDE_ALERT,
        f"Event {position} of stored webhook batch {batch_id} ({event.kind} for {about}) could not be "
        f"stored and was set aside: {reason}. The other events of the batch were applied; the batch is "
        "kept as it was received.",
        email,
    )
    db.session.commit()
    return {"position": position, "kind": event.kind, "error": reason}


def _first_line(error: BaseException) -> str:
    """The database's own words (or the exception's), one line, storable and short."""
    cause = getattr(error, "orig", None) or error
    text = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
    return storable(f"{type(cause).__name__}: {text}")[:300]


def alert_late_batches(now: datetime) -> int:
    """Raise one alert while stored batches wait longer than LATE_AFTER to be applied, and close it
    once none does; return how many are late."""
    late = list(
        db.session.execute(
            sa.select(WebhookBatch.id)
            .where(WebhookBatch.applied_at.is_(None), WebhookBatch.received_at <= now - LATE_AFTER)
            .order_by(WebhookBatch.id)
            .limit(20)
        ).scalars()
    )
    open_alert = sa.and_(OperatorAlert.kind == LATE_BATCH_ALERT, OperatorAlert.resolved_at.is_(None))
    if not late:
        db.session.execute(sa.update(OperatorAlert).where(open_alert).values(resolved_at=now))
        db.session.commit()
        return 0
    if db.session.execute(sa.select(OperatorAlert.id).where(open_alert)).first() is None:
        named = ", ".join(str(batch_id) for batch_id in late[:10]) + (" …" if len(late) > 10 else "")
        alert_operators(
            LATE_BATCH_ALERT,
            f"Stored webhook batches have waited more than {LATE_AFTER.seconds // 60} minutes to be "
            f"applied (batch {named}): their events are not on the emails yet. Check that the workers "
            "run and what their log says about these batches. This alert closes by itself once they "
            "are applied.",
        )
        db.session.commit()
    return len(late)
