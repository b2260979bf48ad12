"""Send jobs."""

from jobs import app_context
from webapp.services import handover


def send_due() -> int:
    """Hand the next batch of due emails to the provider; return how many it took."""
    with app_context():
        return handover.deliver_due()


def send_email(email_id: int) -> str:
    """Hand one email to the provider unless that already happened (jobs queued before batches)."""
    with app_context():
        return handover.deliver(email_id)
