"""Retention: purge records older than RETENTION_DAYS in small, short transactions.

Each batch is its own transaction and deletes a few hundred rows chosen by id, so a purge holds
its row locks for milliseconds and never touches anything the log (30 days) or ingestion reads.
Stopping it at any point leaves whole emails (an email goes with its events in one transaction);
the next run carries on where it stopped.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa
from flask import current_app

from webapp.extensions import db
from webapp.models import (
    Email,
    EmailContent,
    EmailEvent,
    OperatorAlert,
    PendingEvent,
    RemovalRequest,
    SpamListEntry,
    UTCDateTime,
    WebhookBatch,
    utcnow,
)

log = logging.getLogger(__name__)

# One run stops after this long; the scheduler starts the next and it resumes.
RUN_SECONDS = 60.0
# A batch that would wait longer than this for a lock gives way and the run ends: the purge
# must never queue in front of the log or of event ingestion.
LOCK_TIMEOUT_MS = 2000


@dataclass
class PurgeReport:
    """How many rows one purge run removed or emptied, per kind; and whether it finished."""

    counts: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(
            ("emails", "events", "webhook_batches", "pending_events", "removal_bodies", "alerts"), 0
        )
    )
    finished: bool = True


def cutoff(now: datetime, days: int | None = None) -> datetime:
    """Return the moment before which records are purged."""
    return now - timedelta(days=days if days is not None else current_app.config["RETENTION_DAYS"])


def purge(
    now: datetime | None = None, *, batch_size: int | None = None, max_batches: int | None = None
) -> PurgeReport:
    """Purge everything older than RETENTION_DAYS, batch by batch; stop early after max_batches."""
    before = cutoff(now or utcnow())
    size = batch_size or current_app.config["RETENTION_BATCH_SIZE"]
    report = PurgeReport()
    started = time.monotonic()
    steps = (_purge_email_batch, _purge_webhook_batch, _purge_pending_batch, _purge_removal_bodies)
    batches = 0
    for step in steps:
        while True:
            if (
                max_batches is not None and batches >= max_batches
            ) or time.monotonic() - started > RUN_SECONDS:
                report.finished = False
                return report
            try:
                _limit_lock_waits()
                done = step(before, size, report.counts)
                db.session.commit()
            except sa.exc.OperationalError as error:
                # A lock we would have waited for: give way, the next run resumes here.
                db.session.rollback()
                log.warning("retention purge gave way to other work: %s", error.orig)
                report.finished = False
                return report
            batches += 1
            if done < size:
                break
    if any(report.counts.values()):
        log.info("retention purge removed %s", report.counts)
    return report


def _limit_lock_waits() -> None:
    if db.session.get_bind().dialect.name == "postgresql":
        db.session.execute(sa.text(f"SET LOCAL lock_timeout = {LOCK_TIMEOUT_MS}"))


def _purge_email_batch(before: datetime, size: int, counts: dict[str, int]) -> int:
    """Delete one batch of old emails with their events; unhook what still points at them."""
    # Locked, like the event writers lock them (email_event has no foreign key, migration 0017):
    # an apply that holds one of them commits its events first, and the DELETE below sees them.
    ids = list(
        db.session.execute(
            sa.select(Email.id)
            .where(Email.created_at < before)
            .order_by(Email.id)
            .limit(size)
            .with_for_update()
        ).scalars()
    )
    if not ids:
        return 0
    # A newer resend, a spam-list entry or an open alert may name an old email: they stay, unhooked.
    db.session.execute(sa.update(Email).where(Email.resend_of_id.in_(ids)).values(resend_of_id=None))
    db.session.execute(sa.update(SpamListEntry).where(SpamListEntry.email_id.in_(ids)).values(email_id=None))
    alerts = db.session.execute(
        sa.delete(OperatorAlert).where(
            OperatorAlert.email_id.in_(ids), OperatorAlert.resolved_at.is_not(None)
        )
    )
    db.session.execute(sa.update(OperatorAlert).where(OperatorAlert.email_id.in_(ids)).values(email_id=None))
    events = db.session.execute(sa.delete(EmailEvent).where(EmailEvent.email_id.in_(ids)))
    # The copy of what was sent goes with its log entry.
    db.session.execute(sa.delete(EmailContent).where(EmailContent.email_id.in_(ids)))
    db.session.execute(sa.delete(Email).where(Email.id.in_(ids)))
    counts["emails"] += len(ids)
    counts["events"] += events.rowcount or 0
    counts["alerts"] += alerts.rowcount or 0
    return len(ids)


def _delete_old(model: type, timestamp: sa.Column, before: datetime, size: int) -> int:
    ids = list(
        db.session.execute(
            sa.select(model.id).where(timestamp < before).order_by(model.id).limit(size)
        ).scalars()
    )
    if ids:
        db.session.execute(sa.delete(model).where(model.id.in_(ids)))
    return len(ids)


def _purge_webhook_batch(before: datetime, size: int, counts: dict[str, int]) -> int:
    """Delete one batch of old webhook bodies (applied ones usually went after a week already)."""
    done = _delete_old(WebhookBatch, WebhookBatch.received_at, before, size)
    counts["webhook_batches"] += done
    return done


def _purge_pending_batch(before: datetime, size: int, counts: dict[str, int]) -> int:
    """Delete one batch of old events kept for emails we never knew."""
    done = _delete_old(PendingEvent, PendingEvent.received_at, before, size)
    counts["pending_events"] += done
    return done


def _purge_removal_bodies(before: datetime, size: int, counts: dict[str, int]) -> int:
    """Empty the mail of old decided removal cases; the case and its decision stay on record."""
    ids = list(
        db.session.execute(
            sa.select(RemovalRequest.id)
            .where(
                RemovalRequest.received_at < before,
                # A case nobody has decided yet keeps its evidence, however old.
                RemovalRequest.status != "pending",
                sa.or_(RemovalRequest.raw_mail.is_not(None), RemovalRequest.body_excerpt != ""),
            )
            .order_by(RemovalRequest.id)
            .limit(size)
        ).scalars()
    )
    if ids:
        db.session.execute(
            sa.update(RemovalRequest).where(RemovalRequest.id.in_(ids)).values(raw_mail=None, body_excerpt="")
        )
    counts["removal_bodies"] += len(ids)
    return len(ids)


def purge_audit(connection: sa.Connection, before: datetime, batch_size: int) -> int:
    """Delete audit lines older than `before`, as the owner of the tables; return how many.

    The append-only trigger is set aside inside each batch's own transaction only, so no other
    session ever sees the trail without it.
    """
    table = sa.table("audit_entry", sa.column("id"), sa.column("at", UTCDateTime))
    removed = 0
    postgres = connection.dialect.name == "postgresql"
    while True:
        ids = sa.select(table.c.id).where(table.c.at < before).order_by(table.c.id).limit(batch_size)
        if postgres:
            with connection.begin():
                connection.execute(sa.text("ALTER TABLE audit_entry DISABLE TRIGGER audit_entry_append_only"))
                done = connection.execute(sa.delete(table).where(table.c.id.in_(ids))).rowcount or 0
                connection.execute(sa.text("ALTER TABLE audit_entry ENABLE TRIGGER audit_entry_append_only"))
        else:
            # SQLite (development): the trigger comes back whatever happens to the delete.
            try:
                with connection.begin():
                    connection.execute(sa.text("DROP TRIGGER IF EXISTS audit_entry_no_delete"))
                    done = connection.execute(sa.delete(table).where(table.c.id.in_(ids))).rowcount or 0
            finally:
                with connection.begin():
                    connection.execute(
                        sa.text(
                            "CREATE TRIGGER IF NOT EXISTS audit_entry_no_delete BEFORE DELETE ON "
                            "audit_entry BEGIN SELECT RAISE(ABORT, 'audit entries are append-only'); END"
                        )
                    )
        removed += done
        if done < batch_size:
            return removed
