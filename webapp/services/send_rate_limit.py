"""The provider's rate limit is the account's: while it holds, every send waits, on every worker."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import sqlalchemy as sa
from redis.exceptions import RedisError

from webapp.extensions import db
from webapp.models import Email
from webapp.services.budget import block, blocked_until

log = logging.getLogger(__name__)

SEND_BLOCK_KEY = "send-blocked-until"


def wait_for_rate_limit(which: sa.ColumnElement[bool], until: float) -> None:
    """Leave queued emails until the account's rate limit resets, without asking the provider."""
    resume = datetime.fromtimestamp(until, UTC)
    db.session.execute(
        sa.update(Email)
        .where(
            which,
            Email.send_state == "queued",
            sa.or_(Email.next_attempt_at.is_(None), Email.next_attempt_at < resume),
        )
        .values(next_attempt_at=resume, send_error="waiting for the email provider's rate limit to reset")
        .execution_options(synchronize_session=False)
    )
    db.session.commit()


def block_sends(seconds: float) -> None:
    """Hold back every send for a while: the provider's rate limit is the account's."""
    try:
        block(SEND_BLOCK_KEY, seconds)
    except RedisError as error:
        log.warning("could not share the email provider's rate limit: %s", error)


def sends_blocked_until() -> float | None:
    """Return until when the provider's rate limit holds every send back, or None."""
    try:
        return blocked_until(SEND_BLOCK_KEY)
    except RedisError as error:
        log.warning("cannot read the email provider's rate limit: %s", error)
        return None
