"""Pick the email provider the settings name.

The sandbox (webapp.sandbox) is imported only when EMAIL_PROVIDER=sandbox: it is reached through
the real adapter of its wire format (SANDBOX_WIRE_FORMAT), over a WSGI transport.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from webapp import clock
from webapp.providers.base import EmailProvider, InboundReader, ProviderEvent

if TYPE_CHECKING:
    from webapp.sandbox.base import Simulator

SANDBOX_API_BASE = "http://sandbox.invalid"

# wire-format name -> "module:function" that parses its webhook bodies (no credentials needed, so a
# stored batch can be applied by any worker).
WEBHOOK_PARSERS: dict[str, str] = {
    "sendgrid": "webapp.providers.sendgrid:parse_webhook_events",
    "postmark": "webapp.providers.postmark:parse_webhook_event",
}
# wire-format name -> "module:function" that reads its inbound-mail posts (no credentials needed).
INBOUND_READERS: dict[str, str] = {
    "sendgrid": "webapp.providers.sendgrid_inbound:read_inbound",
    "postmark": "webapp.providers.postmark_inbound:read_inbound",
}


def wire_format(config: dict[str, Any]) -> str:
    """Return the wire format the configured provider speaks (the sandbox plays SANDBOX_WIRE_FORMAT)."""
    if config["EMAIL_PROVIDER"] == "sandbox":
        return str(config["SANDBOX_WIRE_FORMAT"])
    return str(config["EMAIL_PROVIDER"])


def webhook_parser(name: str) -> Callable[[bytes], list[ProviderEvent]]:
    """Return the webhook body parser of a wire format (KeyError when there is none)."""
    module, _, function = WEBHOOK_PARSERS[name].partition(":")
    return getattr(importlib.import_module(module), function)


def inbound_reader(name: str) -> InboundReader:
    """Return the inbound-mail reader of a wire format (KeyError when there is none)."""
    module, _, function = INBOUND_READERS[name].partition(":")
    return getattr(importlib.import_module(module), function)


def get_provider(config: dict[str, Any]) -> EmailProvider:
    """Return the configured provider; the sandbox is reached through its wire format's real adapter.

    One provider (and so one pool of HTTP connections) is kept per process and setting.
    """
    timeout = config["SEND_TIMEOUT_SECONDS"]
    tolerance = config["WEBHOOK_TOLERANCE_SECONDS"]
    if config["EMAIL_PROVIDER"] == "sandbox":
        return _sandbox_provider(
            config["SANDBOX_WIRE_FORMAT"],
            config["SANDBOX_STATE_PATH"],
            config.get("SANDBOX_WEBHOOK_URL") or "",
            config["SANDBOX_SPEED"],
            timeout,
            config.get("SENDGRID_WEBHOOK_PUBLIC_KEY") or "",
            tolerance,
            config.get("SANDBOX_CLOCK_SKEW_SECONDS") or 0,
        )
    if config["EMAIL_PROVIDER"] == "postmark":
        return _postmark_provider(
            config["POSTMARK_SERVER_TOKEN"],
            config["POSTMARK_API_BASE"],
            config["POSTMARK_MESSAGE_STREAM"],
            config["POSTMARK_WEBHOOK_USERNAME"],
            config["POSTMARK_WEBHOOK_PASSWORD"],
            timeout,
        )
    return _sendgrid_provider(
        config["SENDGRID_API_KEY"],
        config["SENDGRID_API_BASE"],
        timeout,
        config.get("SENDGRID_WEBHOOK_PUBLIC_KEY") or "",
        tolerance,
    )


@lru_cache(maxsize=8)
def _postmark_provider(
    server_token: str,
    api_base: str,
    stream: str,
    webhook_username: str,
    webhook_password: str,
    timeout: float,
) -> EmailProvider:
    from webapp.providers.postmark import PostmarkProvider

    return PostmarkProvider(
        server_token,
        api_base,
        message_stream=stream,
        timeout=timeout,
        clock=clock.timestamp,
        webhook_username=webhook_username,
        webhook_password=webhook_password,
    )


@lru_cache(maxsize=8)
def _sendgrid_provider(
    api_key: str, api_base: str, timeout: float, webhook_public_key: str, tolerance: int
) -> EmailProvider:
    from webapp.providers.sendgrid import SendGridProvider

    return SendGridProvider(
        api_key,
        api_base,
        timeout=timeout,
        clock=clock.timestamp,
        webhook_public_key=webhook_public_key,
        webhook_tolerance_seconds=tolerance,
    )


@lru_cache(maxsize=8)
def _sandbox_provider(
    wire_format: str,
    state_path: str,
    webhook_url: str,
    speed: float,
    timeout: float,
    webhook_public_key: str,
    tolerance: int,
    skew: float = 0,
) -> EmailProvider:
    """The adapter of the sandbox's wire format, reaching the simulator in-process.

    The simulator signs its webhooks with a key of its own, unless a test configures one.
    """
    import httpx

    server = _sandbox(wire_format, state_path, webhook_url, speed, skew)
    transport = httpx.WSGITransport(app=server)
    if wire_format == "sendgrid":
        from webapp.providers.sendgrid import SendGridProvider
        from webapp.sandbox.sendgrid import SendGridSandbox

        assert isinstance(server, SendGridSandbox)
        return SendGridProvider(
            "sandbox",
            SANDBOX_API_BASE,
            transport=transport,
            timeout=timeout,
            clock=clock.timestamp,
            webhook_public_key=webhook_public_key or server.public_key_b64,
            webhook_tolerance_seconds=tolerance,
        )
    if wire_format == "postmark":
        from webapp.providers.postmark import PostmarkProvider

        # Postmark signs nothing: the sandbox's webhook posts carry its own Basic credentials.
        username, password = getattr(server, "webhook_username", ""), getattr(server, "webhook_password", "")
        return PostmarkProvider(
            "sandbox",
            SANDBOX_API_BASE,
            transport=transport,
            timeout=timeout,
            clock=clock.timestamp,
            webhook_username=username,
            webhook_password=password,
        )
    raise ValueError(f"no adapter for the sandbox's {wire_format!r} wire format")


def get_sandbox(config: dict[str, Any]) -> Simulator:
    """Return the sandbox provider's simulator (its state lives in its own file)."""
    return _sandbox(
        config["SANDBOX_WIRE_FORMAT"],
        config["SANDBOX_STATE_PATH"],
        config.get("SANDBOX_WEBHOOK_URL") or "",
        config["SANDBOX_SPEED"],
        config.get("SANDBOX_CLOCK_SKEW_SECONDS") or 0,
    )


@lru_cache(maxsize=8)
def _sandbox(wire_format: str, state_path: str, webhook_url: str, speed: float, skew: float = 0) -> Simulator:
    from webapp.sandbox import open_simulator

    # A skewed provider clock: its event times, signed webhook times and acceptance times are off.
    sandbox_clock = (lambda: clock.timestamp() + skew) if skew else clock.timestamp
    return open_simulator(wire_format, state_path, webhook_url=webhook_url, speed=speed, clock=sandbox_clock)
