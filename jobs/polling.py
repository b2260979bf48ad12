"""Status polling jobs."""

from jobs import app_context
from webapp.services import in_doubt, polling


def poll_provider() -> int:
    """Settle in-doubt sends, then ask the provider about every email due for a poll."""
    with app_context():
        # Each has its own share of the provider's records budget (webapp/services/budget.py).
        return in_doubt.check_in_doubt() + polling.poll_due()
