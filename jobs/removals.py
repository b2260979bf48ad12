"""Spam-list removal jobs."""

from jobs import app_context
from webapp.queue import enqueue
from webapp.services import removals


def lift_spam_block(case_id: int) -> bool:
    """Take an approved case's address off the provider's spam-report list."""
    with app_context():
        return removals.lift_block(case_id)


def sweep_lifts() -> int:
    """Enqueue the lift of every approved case whose block is still on (a failed or lost job)."""
    with app_context():
        due = removals.due_lifts()
        for case_id in due:
            enqueue(removals.LIFT_JOB, case_id)
        return len(due)
