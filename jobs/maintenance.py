"""Periodic maintenance jobs."""

from flask import current_app

from jobs import app_context
from webapp.providers import get_sandbox
from webapp.services import maintenance


def sweep() -> dict[str, int]:
    """Re-enqueue lost work, flag stuck emails, expire old deferrals."""
    with app_context():
        return maintenance.sweep()


def sync_spam_list() -> int:
    """Copy the provider's spam-report list into ours."""
    with app_context():
        return maintenance.sync_spam_list()


def sandbox_tick() -> int:
    """Let the sandbox provider post its due event batches to our webhook (demo only)."""
    with app_context():
        config = current_app.config
        if config["EMAIL_PROVIDER"] != "sandbox" or not config["SANDBOX_WEBHOOK_URL"]:
            return 0
        return get_sandbox(config).deliver_webhooks()
