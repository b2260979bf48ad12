"""The sweeper's part in sending: wake a sender for emails a lost job left due, and put the sends
of workers that died mid-call in doubt."""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa
from flask import current_app

from webapp.extensions import db
from webapp.freshness.counters import mark_logs_changed
from webapp.models import Email
from webapp.queue import enqueue
from webapp.services.send_rate_limit import sends_blocked_until
from webapp.services.sending import SEND_JOB

SWEEP_SEND_JOB_ID = "send-sweep"


def due_sends(now: datetime, limit: int = 500) -> list[int]:
    """Return ids of emails whose send is due (a lost job, a retry time reached)."""
    if sends_blocked_until() is not None:
        return []  # the provider's rate limit: their jobs would only wait
    # A new email's own job is on its way; queuing it again is harmless (one send-<id> job waits
    # at a time), so this only saves the sweeper some work.
    grace = now - timedelta(seconds=5)
    return list(
        db.session.execute(
            sa.select(Email.id)
            .where(
                Email.send_state == "queued",
                sa.or_(
                    Email.next_attempt_at <= now,
                    sa.and_(Email.next_attempt_at.is_(None), Email.created_at <= grace),
                ),
            )
            .order_by(Email.id)
            .limit(limit)
        ).scalars()
    )


def wake_for_due(now: datetime) -> int:
    """Queue the sweeper's send job when emails are due (a lost job, a retry time reached); return
    how many are due. Its own job id: sweeps never queue two, and a lost wake-up mark never stops it."""
    due = due_sends(now)
    if due:
        enqueue(SEND_JOB, job_id=SWEEP_SEND_JOB_ID)
    return len(due)


def recover_abandoned_sends(now: datetime) -> int:
    """Put sends whose worker died mid-call in doubt, so they are checked, not blindly resent."""
    after = timedelta(seconds=current_app.config["SEND_ABANDONED_SECONDS"])
    recovered = db.session.execute(
        sa.update(Email)
        .where(Email.send_state == "claimed", Email.send_claimed_at <= now - after)
        .values(
            send_state="in_doubt",
            next_attempt_at=now,
            # Since the first attempt we could not account for, however many died after it.
            in_doubt_since=sa.func.coalesce(Email.in_doubt_since, Email.send_claimed_at),
            send_error="the worker sending it stopped before the provider answered",
            version=Email.version + 1,
        )
        .returning(Email.clinic_id, Email.client_id)
        .execution_options(synchronize_session=False)
    ).all()
    mark_logs_changed(db.session, [(row.clinic_id, row.client_id) for row in recovered])
    db.session.commit()
    return len(recovered)
