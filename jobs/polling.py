"""Status polling jobs."""

from jobs import app_context
from webapp.services import polling, sending


def poll_provider() -> int:
    """Settle in-doubt sends, then ask the provider about every email due for a poll."""
    with app_context():
        # In-doubt sends first: an email waits on them, and they share the activity budget.
        return sending.check_in_doubt() + polling.poll_due()
