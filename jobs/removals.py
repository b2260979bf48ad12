"""Spam-list removal jobs."""

from jobs import app_context
from webapp.models import utcnow
from webapp.queue import enqueue
from webapp.services import removals
from webapp.services.inbound import filing


def check_removal_request(case_id: int) -> str:
    """Decide whether a mail filed by the inbound route proves a removal request."""
    with app_context():
        return filing.check(case_id)


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


def sweep_checks() -> int:
    """Enqueue the check of every filed mail whose check was lost, killed or timed out."""
    with app_context():
        due = filing.due_checks(utcnow())
        for case_id in due:
            filing.enqueue_check(case_id)
        return len(due)
