"""Spam-list removal jobs."""

from jobs import app_context
from webapp.services import removals


def lift_spam_block(case_id: int) -> bool:
    """Take an approved case's address off the provider's spam-report list."""
    with app_context():
        return removals.lift_block(case_id)
