"""Pick the email provider the settings name."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from webapp.providers.base import EmailProvider
from webapp.providers.sandbox import SandboxServer


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


def get_sandbox(config: dict[str, Any]) -> SandboxServer:
    """Return the sandbox provider's server (its state lives in its own file)."""
    return _sandbox(
        config["SANDBOX_STATE_PATH"], config.get("SANDBOX_WEBHOOK_URL") or "", config["SANDBOX_SPEED"]
    )


@lru_cache(maxsize=8)
def _sandbox(state_path: str, webhook_url: str, speed: float) -> SandboxServer:
    return SandboxServer(state_path, webhook_url=webhook_url, speed=speed)
