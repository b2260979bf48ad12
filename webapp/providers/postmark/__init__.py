"""Postmark: the Email API (sending), the Messages API (lookup), suppressions, and webhooks; its
words in ours are in translate.

Postmark differs from SendGrid where it matters to us:
- a send to a suppressed address is refused at once (HTTP 422, ErrorCode 406), not accepted and
  dropped later; a batch answers 200 with one result per message, in request order;
- webhooks carry one event per POST and are not signed: the URL carries HTTP Basic credentials;
- no webhook says "processed": acceptance is the signal, and the Messages API's details confirm it;
- a spam complaint cannot be lifted through the API; only Postmark's support can reactivate it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

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
from webapp.providers.postmark import lookup, sending, suppressions, webhooks
from webapp.providers.postmark.translate import error_text

TOKEN_HEADER = "X-Postmark-Server-Token"


class PostmarkProvider(EmailProvider):
    """Postmark's server API, spoken over httpx with a server token."""

    name = "postmark"
    max_batch = sending.MAX_BATCH
    credentials_hint = "POSTMARK_SERVER_TOKEN (the server's API token, not an account token)"
    records_hint = "the Messages API (it keeps 45 days by default) and the webhook's Basic credentials"
    records_cost = RecordsCost(lookup.RECORDS_REQUESTS_PER_MINUTE, emails_per_lookup=1, documented=False)

    def __init__(
        self,
        server_token: str,
        api_base: str,
        *,
        message_stream: str = "outbound",
        transport: httpx.BaseTransport | None = None,
        timeout: float = 15.0,
        track_opens: bool = True,
        track_links: bool = True,
        clock: Callable[[], float] = time.time,
        webhook_username: str = "",
        webhook_password: str = "",
    ) -> None:
        self._api = http.ProviderApi(
            "Postmark",
            api_base,
            {TOKEN_HEADER: server_token},
            transport=transport,
            timeout=timeout,
            error_text=error_text,
            # Postmark documents no Retry-After for its 429: a minute unless it says otherwise.
            retry_after=http.retry_after,
        )
        self._stream = message_stream
        self._sender = sending.Sender(
            self._api, message_stream, track_opens=track_opens, track_links=track_links
        )
        self._clock = clock
        self._webhook_username = webhook_username
        self._webhook_password = webhook_password

    @property
    def _client(self) -> httpx.Client:
        """The pooled HTTP client (its headers carry the server token)."""
        return self._api.client

    def close(self) -> None:
        """Close the HTTP connections."""
        self._api.close()

    def api_base(self) -> str:
        """Return the API base URL this provider talks to."""
        return str(self._api.client.base_url).rstrip("/")

    def message_stream(self) -> str:
        """Return the message stream messages are sent on (and whose suppressions are read)."""
        return self._stream

    def send(self, message: OutgoingMessage) -> SendResult:
        """POST one message to /email and say what became of it."""
        return self._sender.send(message)

    def send_batch(self, messages: list[OutgoingMessage]) -> list[SendResult]:
        """POST the messages to /email/batch, up to 500 a request (the first request carries one);
        results are Postmark's, matched by position."""
        return self._sender.send_batch(messages)

    def message_body(self, message: OutgoingMessage) -> dict[str, Any]:
        """Build the Email API request body for one message."""
        return self._sender.message_body(message)

    def poll(self, refs: list[PollRef], request_budget: int) -> PollResult:
        """Fetch each message's details (its MessageEvents) while the budget lasts."""
        return lookup.poll(self._api, refs, request_budget)

    def find_accepted(self, refs: list[SentRef], request_budget: int) -> AcceptedResult:
        """Search outbound messages by our id in Metadata, one id per request."""
        return lookup.find_accepted(self._api, self._stream, refs, request_budget)

    def spam_reports(self, since: datetime | None = None) -> list[tuple[str, datetime]]:
        """Return the addresses Postmark suppresses for a spam complaint on our message stream."""
        return suppressions.spam_reports(self._api, self._stream, since)

    def remove_spam_report(self, address: str) -> LiftResult:
        """Ask Postmark to delete the address's suppression; a spam complaint it refuses to lift."""
        return suppressions.remove_spam_report(self._api, self._stream, address)

    def verify_webhook(self, headers: Mapping[str, str], body: bytes, now: float) -> WebhookVerdict:
        """Check the HTTP Basic credentials Postmark sends from the webhook URL, in constant time."""
        return webhooks.verify_webhook(self._webhook_username, self._webhook_password, headers, body)

    def parse_webhook(self, body: bytes) -> list[ProviderEvent]:
        """Parse one Postmark webhook body (one JSON object); ValueError when it is malformed."""
        return webhooks.parse_webhook_event(body)
