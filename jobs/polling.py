"""Status polling jobs."""

from jobs import app_context
from webapp.services import polling


def poll_provider() -> int:
    """Ask the provider about every email due for a poll."""
    with app_context():
        return polling.poll_due()
