"""Postmark's Email API: single sends and batches of up to 500 messages and 50 MB.

A send to a suppressed address is refused at once (HTTP 422, ErrorCode 406), not accepted and
dropped later; a batch answers 200 with one result per message, in request order.

A message goes as Postmark documents it: TextBody, HtmlBody, Attachments (base64), ReplyTo, and
tracking asked for only where it can work: TrackOpens puts a pixel in the HTML part, and TrackLinks
"HtmlOnly" rewrites the HTML part's links, never the text part's, so the text reads as written.
"""

from __future__ import annotations

import base64
from typing import Any

import httpx

from webapp.providers.base import OutgoingMessage, ProviderError, RejectReason, SendResult
from webapp.providers.http import JSON_CONTENT, ProviderApi, json_body, json_or_none
from webapp.providers.postmark import suppressions
from webapp.providers.postmark.translate import (
    APP_ID_KEY,
    error_text,
    optional_time,
    postmark_error,
    text,
)

MAX_BATCH = 500  # Postmark's limit per /email/batch call
# Postmark's size limits: 10 MB a message (after base64), 50 MB a batch request, attachments
# included; over them, it refuses the whole request (413). MB read as 10^6 bytes, and a message's
# JSON counted whole: a little more than Postmark counts, so a request we make is never refused for it.
MAX_MESSAGE_BYTES = 10_000_000
MAX_BATCH_BYTES = 50_000_000
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
        content = json_body(self.message_body(message))
        if len(content) > MAX_MESSAGE_BYTES:
            return _too_large(len(content))
        try:
            response = self.api.client.post("/email", content=content, headers=JSON_CONTENT)
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
        """POST the messages to /email/batch, up to 500 and 50 MB a request; results are Postmark's,
        matched by position.

        The first request carries one message: when Postmark is failing (an outage, a refused token,
        a rate limit), one message meets it and only that one is in doubt, not a batch of 500. After
        a request that did not go through, no further one is made: the rest come back not_sent (to
        be tried again after FAILED_REQUEST_WAIT), or with the 429's or the 401's outcome. A message
        over Postmark's 10 MB is refused here, alone: in a request, it would have the whole request
        refused.
        """
        results: list[SendResult | None] = [None] * len(messages)
        bodies = [json_body(self.message_body(message)) for message in messages]
        waiting = []
        for index, body in enumerate(bodies):
            if len(body) > MAX_MESSAGE_BYTES:
                results[index] = _too_large(len(body))
            else:
                waiting.append(index)
        most = FIRST_REQUEST
        while waiting:
            chunk = _next_chunk(waiting, bodies, most)
            waiting = waiting[len(chunk) :]
            answers, failure = self._send_chunk([messages[i] for i in chunk], [bodies[i] for i in chunk])
            for index, answer in zip(chunk, answers, strict=True):
                results[index] = answer
            most = MAX_BATCH
            if failure is not None:
                for index in waiting:
                    results[index] = _not_sent_after(failure)
                break
        return [result or SendResult("in_doubt", error="no answer") for result in results]

    def _send_chunk(
        self, messages: list[OutgoingMessage], bodies: list[bytes]
    ) -> tuple[list[SendResult], SendResult | None]:
        """Send one request; return one result per message and, when the request as a whole did not
        go through (no answer, 5xx, 429, 401), that result."""
        try:
            response = self.api.client.post(
                "/email/batch", content=b"[" + b",".join(bodies) + b"]", headers=JSON_CONTENT
            )
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
        body: dict[str, Any] = {"From": sender, "To": to, "Subject": message.subject}
        if message.body_text or not message.body_html:
            body["TextBody"] = message.body_text
        if message.body_html:
            body["HtmlBody"] = message.body_html
        body.update(
            {
                "Metadata": {APP_ID_KEY: message.app_message_id},
                "MessageStream": self.stream,
                # Asked for only where it can work: a pixel needs an HTML part, a rewrite a link in it.
                "TrackOpens": self.track_opens and message.track_opens,
                "TrackLinks": "HtmlOnly" if self.track_links and message.track_links else "None",
            }
        )
        if message.attachments:
            body["Attachments"] = [
                {
                    "Name": attachment.filename,
                    "Content": base64.b64encode(attachment.content).decode("ascii"),
                    "ContentType": attachment.content_type,
                }
                for attachment in message.attachments
            ]
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


def _next_chunk(waiting: list[int], bodies: list[bytes], most: int) -> list[int]:
    """The next request's messages (indexes into bodies): at most `most`, within MAX_BATCH_BYTES
    as a JSON array (each message is within MAX_MESSAGE_BYTES, so one always fits)."""
    chunk: list[int] = []
    size = 2  # the brackets
    for index in waiting[:most]:
        grown = size + len(bodies[index]) + (1 if chunk else 0)
        if chunk and grown > MAX_BATCH_BYTES:
            break
        chunk.append(index)
        size = grown
    return chunk


def _too_large(size: int) -> SendResult:
    """The result of a message over Postmark's 10 MB, refused without a request."""
    return SendResult(
        "rejected",
        error=f"too large for Postmark: {size:,} bytes, over its 10 MB a message",
        reject_reason="other",
    )


def _not_sent_after(failure: SendResult) -> SendResult:
    """The result of a message left unsent because an earlier request of its batch failed."""
    error = f"not sent: {failure.error}"
    if failure.outcome in ("rate_limited", "unauthorized"):
        return SendResult(failure.outcome, error=error, retry_after=failure.retry_after)
    return SendResult("not_sent", error=error, retry_after=FAILED_REQUEST_WAIT)


def _quoted(name: str) -> str:
    """Escape a display name for a quoted string (Postmark takes "Name <addr>")."""
    return name.replace("\\", "\\\\").replace('"', '\\"').replace("\r", " ").replace("\n", " ")
