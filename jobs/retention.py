"""Retention job: purge records older than RETENTION_DAYS."""

from jobs import app_context
from webapp.services import retention


def purge_old_records() -> dict[str, int]:
    """Purge one run's worth of old records; the next run resumes where this one stopped."""
    with app_context():
        return retention.purge().counts
