"""Send jobs."""

from jobs import app_context
from webapp.services import sending


def send_email(email_id: int) -> str:
    """Hand one email to the provider unless that already happened."""
    with app_context():
        return sending.deliver(email_id)
