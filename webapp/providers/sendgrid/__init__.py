"""SendGrid v3: Mail Send (sending), Email Activity (lookup), the spam-report list (suppressions),
and the signed event webhook (webhooks); its words in ours are in translate."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import datetime

import httpx

from webapp.providers import http
from webapp.providers.base import (
    AcceptedResult,
    EmailProvider,
    LiftResult,
    OutgoingMessage,
    PollRef,
    PollResult,
    ProviderEvent,
    RecordsCost,
    SendResult,
    SentRef,
    WebhookVerdict,
)
from webapp.providers.sendgrid import lookup, sending, suppressions, webhooks
from webapp.providers.sendgrid.translate import error_text


class SendGridProvider(EmailProvider):
    """The SendGrid v3 Web API, spoken over httpx (also to the sandbox, through a WSGI transport)."""

    name = "sendgrid"
    credentials_hint = "SENDGRID_API_KEY and its Mail Send permission"
    records_hint = "the Email Activity add-on (API access to the message history) and the event webhook"
    max_batch = sending.SEND_BATCH_SIZE
    # Email Activity's documented limit is 6 requests a minute; one query asks about 50 of our ids.
    records_cost = RecordsCost(requests_per_minute=6, emails_per_lookup=lookup.FIND_BATCH_SIZE)

    def __init__(
        self,
        api_key: str,
        api_base: str,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 15.0,
        track_opens: bool = True,
        track_clicks: bool = True,
        clock: Callable[[], float] = time.time,
        webhook_public_key: str = "",
        webhook_tolerance_seconds: int = 300,
    ) -> None:
        self._api = http.ProviderApi(
            "SendGrid",
            api_base,
            {"Authorization": f"Bearer {api_key}"},
            transport=transport,
            timeout=timeout,
            error_text=error_text,
            # Retry-After if given (no clock skew), else until X-RateLimit-Reset.
            retry_after=lambda response: http.retry_after(response, now=clock()),
        )
        self._webhook_public_key = webhook_public_key
        self._webhook_tolerance = webhook_tolerance_seconds
        self._track_opens = track_opens
        self._track_clicks = track_clicks
        self._clock = clock

    @property
    def _client(self) -> httpx.Client:
        """The pooled HTTP client (its headers carry the API key)."""
        return self._api.client

    def close(self) -> None:
        """Close the HTTP connections."""
        self._api.close()

    def send(self, message: OutgoingMessage) -> SendResult:
        """POST one message to /v3/mail/send and say what became of it."""
        body = sending.mail_body(message, track_opens=self._track_opens, track_clicks=self._track_clicks)
        return sending.send(self._api, body)

    def send_batch(self, messages: list[OutgoingMessage]) -> list[SendResult]:
        """Send each message in its own request, a few at a time; one result each, in order."""
        return sending.send_batch(self.send, messages, clock=self._clock, timeout=self._api.timeout)

    def find_accepted(self, refs: list[SentRef], request_budget: int) -> AcceptedResult:
        """Ask Email Activity which of these messages SendGrid took, many in one request."""
        return lookup.find_accepted(self._api, refs, request_budget)

    def poll(self, refs: list[PollRef], request_budget: int) -> PollResult:
        """List the messages with one request, then fetch each one's events while the budget lasts."""
        return lookup.poll(self._api, refs, request_budget)

    def spam_reports(self, since: datetime | None = None) -> list[tuple[str, datetime]]:
        """Return every address on SendGrid's spam-report list (reported since `since`, if given)."""
        return suppressions.spam_reports(self._api, since)

    def remove_spam_report(self, address: str) -> LiftResult:
        """Delete one address from SendGrid's spam-report list."""
        return suppressions.remove_spam_report(self._api, address)

    def verify_webhook(self, headers: Mapping[str, str], body: bytes, now: float) -> WebhookVerdict:
        """Check the ECDSA signature; a copy is a replay while its timestamp is within the tolerance
        (a correctly signed one says how far the clocks differ, also when it is refused)."""
        return webhooks.verify_webhook(self._webhook_public_key, self._webhook_tolerance, headers, body, now)

    def parse_webhook(self, body: bytes) -> list[ProviderEvent]:
        """Parse a JSON array of SendGrid events; ValueError when it is malformed."""
        return webhooks.parse_webhook_events(body)

    def check_webhook(self, body: bytes) -> int:
        """Check a body is a well-formed batch without building its events; return how many it holds."""
        return webhooks.check_webhook_body(body)
