"""Send jobs."""

from jobs import app_context
from webapp.services import sending


def send_due() -> int:
    """Hand the next batch of due emails to the provider; return how many it took."""
    with app_context():
        return sending.deliver_due()
