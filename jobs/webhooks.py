"""Webhook jobs."""

from jobs import app_context
from webapp.services import webhooks


def apply_webhook_batch(batch_id: int) -> int:
    """Apply a stored event-webhook batch, with others waiting unapplied (see webhooks.apply_batch)."""
    with app_context():
        return webhooks.apply_batch(batch_id)
