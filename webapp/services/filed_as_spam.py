"""Emails the client's mail server took and then filed as spam (Postmark's SpamNotification bounce).

Such an email did arrive, so it keeps its status (statuses.py counts the event as Delivered at most);
the log row, the help panel and the timeline say what happened and what the client can do.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import sqlalchemy as sa

from webapp.event_kinds import EventKind
from webapp.extensions import db
from webapp.models import Email, EmailEvent

KIND = EventKind.FILED_AS_SPAM


def filed_as_spam_column() -> sa.ScalarSelect:
    """When the receiving server first filed the selected email as spam (None if never), as a
    column of a query of emails: the log reads it with its rows, not in a second statement."""
    return (
        sa.select(sa.func.min(EmailEvent.occurred_at))
        .where(EmailEvent.email_id == Email.id, EmailEvent.kind == KIND)
        .correlate(Email)
        .scalar_subquery()
    )


def filed_as_spam(email_ids: Iterable[int]) -> dict[int, datetime]:
    """Return, for each of these emails the receiving server filed as spam, when it first said so."""
    ids = sorted(set(email_ids))
    if not ids:
        return {}
    rows = db.session.execute(
        sa.select(EmailEvent.email_id, sa.func.min(EmailEvent.occurred_at))
        .where(EmailEvent.email_id.in_(ids), EmailEvent.kind == KIND)
        .group_by(EmailEvent.email_id)
    ).all()
    return {email_id: at for email_id, at in rows}
