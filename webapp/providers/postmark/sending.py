"""Postmark's Email API: single sends and batches of up to 500.

A send to a suppressed address is refused at once (HTTP 422, ErrorCode 406), not accepted and
dropped later; a batch answers 200 with one result per message, in request order.
"""

from __future__ import annotations

from typing import Any

import httpx

from webapp.providers.base import OutgoingMessage, ProviderError, RejectReason, SendResult
from webapp.providers.http import ProviderApi, json_or_none
from webapp.providers.postmark import suppressions
from webapp.providers.postmark.translate import (
    APP_ID_KEY,
    error_text,
    optional_time,
    postmark_error,
    text,
)

MAX_BATCH = 500  # Postmark's limit per /email/batch call
# A batch's first request carries this many messages: an outage then puts one email in doubt.
FIRST_REQUEST = 1
# After a request Postmark failed (5xx, no answer), the rest of its batch waits this long.
FAILED_REQUEST_WAIT = 30.0
MAX_INACTIVE_LOOKUPS = 20  # per send_batch: why an address is inactive, asked of the dump

ERROR_INVALID_TOKEN = 10
ERROR_INVALID_REQUEST = 300
ERROR_INACTIVE_RECIPIENT = 406


class Sender:
    """Sends over one Postmark server's API on one message stream."""

    def __init__(self, api: ProviderApi, stream: str, *, track_opens: bool, track_links: bool) -> None:
        self.api = api
        self.stream = stream
        self.track_opens = track_opens
        self.track_links = track_links

    def send(self, message: OutgoingMessage) -> SendResult:
        """POST one message to /email and say what became of it."""
        try:
            response = self.api.client.post("/email", json=self.message_body(message))
        except httpx.RequestError as error:
            return SendResult("in_doubt", error=self.api.no_answer(error))
        if response.status_code == 200:
            document = json_or_none(response)
            if not isinstance(document, dict):
                # It answered 200, so it has the message, but we cannot read its id.
                return SendResult("accepted", error="Postmark's answer could not be read")
            return self._item_result(document, message.to_address)
        return self._failed_send(response, message.to_address)

    def send_batch(self, messages: list[OutgoingMessage]) -> list[SendResult]:
        """POST the messages to /email/batch, up to 500 a request; results are Postmark's, matched by
        position.

        The first request carries one message: when Postmark is failing (an outage, a refused token,
        a rate limit), one message meets it and only that one is in doubt, not a batch of 500. After
        a request that did not go through, no further one is made: the rest come back not_sent (to
        be tried again after FAILED_REQUEST_WAIT), or with the 429's or the 401's outcome.
        """
        results: list[SendResult] = []
        size = FIRST_REQUEST
        while len(results) < len(messages):
            chunk = messages[len(results) : len(results) + size]
            answers, failure = self._send_chunk(chunk)
            results.extend(answers)
            size = MAX_BATCH
            if failure is not None and len(results) < len(messages):
                results.extend([_not_sent_after(failure)] * (len(messages) - len(results)))
        return results

    def _send_chunk(self, messages: list[OutgoingMessage]) -> tuple[list[SendResult], SendResult | None]:
        """Send one request; return one result per message and, when the request as a whole did not
        go through (no answer, 5xx, 429, 401), that result."""
        try:
            response = self.api.client.post("/email/batch", json=[self.message_body(m) for m in messages])
        except httpx.RequestError as error:
            doubt = SendResult("in_doubt", error=self.api.no_answer(error))
            return [doubt] * len(messages), doubt
        if response.status_code != 200:
            # The whole batch was refused (bad token, over the limits, rate limit, outage).
            refused = self._failed_send(response, None)
            failed = refused.outcome in ("in_doubt", "unavailable", "rate_limited", "unauthorized")
            return [refused] * len(messages), refused if failed else None
        items = json_or_none(response)
        if not isinstance(items, list) or len(items) != len(messages):
            # Failed items name no recipient: without one result per message, in order, we cannot
            # tell which were taken.
            doubt = SendResult("in_doubt", error="Postmark's batch answer does not match the request")
            return [doubt] * len(messages), doubt
        lookups = [MAX_INACTIVE_LOOKUPS]
        results = [
            self._item_result(item, message.to_address, lookups)
            if isinstance(item, dict)
            else SendResult("in_doubt", error="Postmark's batch answer has an unreadable item")
            for item, message in zip(items, messages, strict=True)
        ]
        return results, None

    def message_body(self, message: OutgoingMessage) -> dict[str, Any]:
        """Build the Email API request body for one message."""
        to = message.to_address
        if message.to_name:
            to = f'"{_quoted(message.to_name)}" <{message.to_address}>'
        sender = message.from_address
        if message.from_name:
            sender = f'"{_quoted(message.from_name)}" <{message.from_address}>'
        body: dict[str, Any] = {
            "From": sender,
            "To": to,
            "Subject": message.subject,
            "TextBody": message.body_text,
            "Metadata": {APP_ID_KEY: message.app_message_id},
            "MessageStream": self.stream,
            "TrackOpens": self.track_opens,
            # Our emails are plain text, so link tracking must cover the text part.
            "TrackLinks": "HtmlAndText" if self.track_links else "None",
        }
        if message.reply_to:
            body["ReplyTo"] = message.reply_to
        if message.category:
            body["Tag"] = message.category
        return body

    def _item_result(
        self, item: dict[str, Any], address: str, lookups: list[int] | None = None
    ) -> SendResult:
        """Read one send result: {ErrorCode 0, MessageID} or {ErrorCode, Message}."""
        code = item.get("ErrorCode")
        words = text(item.get("Message")) or ""
        message_id = text(item.get("MessageID"))
        accepted_at = optional_time(item.get("SubmittedAt"))
        if code == 0:
            return SendResult("accepted", provider_message_id=message_id, accepted_at=accepted_at)
        if code is None:
            # "Message accepted, but delivery may be delayed." comes without an ErrorCode.
            if message_id:
                return SendResult("accepted", provider_message_id=message_id, accepted_at=accepted_at)
            return SendResult(
                "in_doubt", error=f"Postmark's answer had neither ErrorCode nor MessageID: {words}"
            )
        if code == ERROR_INACTIVE_RECIPIENT:
            return SendResult(
                "rejected",
                error=postmark_error(code, words),
                reject_reason=self._inactive_reason(address, lookups),
            )
        if code == ERROR_INVALID_REQUEST:
            return SendResult("rejected", error=postmark_error(code, words), reject_reason="invalid_address")
        if code == ERROR_INVALID_TOKEN:
            return SendResult("unauthorized", error=postmark_error(code, words))
        return SendResult("rejected", error=postmark_error(code, words), reject_reason="other")

    def _failed_send(self, response: httpx.Response, address: str | None) -> SendResult:
        """Say what a non-200 answer to a send means."""
        status = response.status_code
        document = json_or_none(response)
        if status == 422 and isinstance(document, dict):
            if address is None and document.get("ErrorCode") == ERROR_INACTIVE_RECIPIENT:
                return SendResult("rejected", error=error_text(response), reject_reason="other")
            return self._item_result(document, address or "")
        error = error_text(response)
        if status == 401:
            return SendResult("unauthorized", error=error)
        if status == 429:
            return SendResult("rate_limited", error=error, retry_after=self.api.retry_after(response))
        if status >= 500:
            return SendResult("unavailable", error=error)
        return SendResult("rejected", error=error, reject_reason="other")

    def _inactive_reason(self, address: str, lookups: list[int] | None = None) -> RejectReason:
        """Say why Postmark holds an address inactive, from its suppressions dump; "other" if unknown."""
        if lookups is not None:
            if lookups[0] <= 0:
                return "other"
            lookups[0] -= 1
        if not address:
            return "other"
        try:
            entries = suppressions.dump(self.api, self.stream, {"EmailAddress": address})
        except ProviderError:
            return "other"
        wanted = address.strip().lower()
        for entry in entries:
            if str(entry.get("EmailAddress", "")).strip().lower() == wanted:
                return suppressions.reject_reason_of(entry)
        return "other"


def _not_sent_after(failure: SendResult) -> SendResult:
    """The result of a message left unsent because an earlier request of its batch failed."""
    error = f"not sent: {failure.error}"
    if failure.outcome in ("rate_limited", "unauthorized"):
        return SendResult(failure.outcome, error=error, retry_after=failure.retry_after)
    return SendResult("not_sent", error=error, retry_after=FAILED_REQUEST_WAIT)


def _quoted(name: str) -> str:
    """Escape a display name for a quoted string (Postmark takes "Name <addr>")."""
    return name.replace("\\", "\\\\").replace('"', '\\"').replace("\r", " ").replace("\n", " ")
