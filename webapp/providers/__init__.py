"""Pick the email provider the settings name."""

from __future__ import annotations

from typing import Any

from webapp.providers.base import EmailProvider


def get_provider(config: dict[str, Any]) -> EmailProvider:
    """Return the configured provider; the sandbox is reached through the real SendGrid adapter."""
    import httpx

    from webapp.providers.sendgrid import SendGridProvider

    if config["EMAIL_PROVIDER"] == "sandbox":
        return SendGridProvider(
            "sandbox",
            "http://sandbox.invalid",
            transport=httpx.WSGITransport(app=get_sandbox(config)),
            timeout=config["SEND_TIMEOUT_SECONDS"],
        )
    return SendGridProvider(
        config["SENDGRID_API_KEY"], config["SENDGRID_API_BASE"], timeout=config["SEND_TIMEOUT_SECONDS"]
    )


def get_sandbox(config: dict[str, Any]):  # noqa: ANN201 - the sandbox module is imported lazily
    """Return the sandbox provider's server (its state lives in its own file)."""
    from webapp.providers.sandbox import SandboxServer

    return SandboxServer(config["SANDBOX_STATE_PATH"], webhook_url=config.get("SANDBOX_WEBHOOK_URL") or "")
