"""SendGrid's Mail Send: one request a message, a batch as a few requests at a time.

A message goes as SendGrid documents it: `content` with text/plain first, then text/html (SendGrid
refuses another order), its attachments base64-encoded, Reply-To, and tracking asked for only where
it can work: open tracking puts a pixel in the HTML part, click tracking rewrites the HTML part's
links (never the text part's: `enable_text` stays off, so the text reads as written).
"""

from __future__ import annotations

import base64
import re
import threading
from collections.abc import Callable
from typing import Any

import httpx

from webapp.providers.base import OutgoingMessage, RejectReason, SendResult
from webapp.providers.http import JSON_CONTENT, ProviderApi, json_body
from webapp.providers.sendgrid.translate import APP_ID_ARG, error_text

# One Mail Send request carries one body for all its recipients (per-recipient bodies need
# templates), so a batch is this many single requests, a few at a time over one connection pool.
SEND_BATCH_SIZE = 50
SEND_CONCURRENCY = 8
# Mail Send refuses a request over 30 MB, attachments included (413); one that big is refused here,
# without a request. MB read as 10^6 bytes, and the JSON counted whole: a little more than SendGrid counts.
MAX_REQUEST_BYTES = 30_000_000
# A Mail Send 400 naming one of these fields refuses the recipient's address itself.
_RECIPIENT_FIELD = re.compile(r"personalizations\.\d+\.to(\.\d+\.email)?")


def send(api: ProviderApi, body: dict[str, Any]) -> SendResult:
    """POST one message's body to /v3/mail/send and say what became of it."""
    content = json_body(body)
    if len(content) > MAX_REQUEST_BYTES:
        return SendResult(
            "rejected",
            error=f"too large for SendGrid: {len(content):,} bytes, over its 30 MB a message",
            reject_reason="other",
        )
    try:
        response = api.client.post("/v3/mail/send", content=content, headers=JSON_CONTENT)
    except httpx.RequestError as error:
        return SendResult("in_doubt", error=api.no_answer(error))
    status = response.status_code
    if 200 <= status < 300:
        return SendResult("accepted", provider_message_id=response.headers.get("X-Message-Id"))
    said = error_text(response)
    if status in (401, 403):
        return SendResult("unauthorized", error=said)
    if status == 429:
        return SendResult("rate_limited", error=said, retry_after=api.retry_after(response))
    if status >= 500:
        return SendResult("unavailable", error=said)
    return SendResult("rejected", error=said, reject_reason=_send_reject_reason(response))


def send_batch(
    send_one: Callable[[OutgoingMessage], SendResult],
    messages: list[OutgoingMessage],
    *,
    clock: Callable[[], float],
    timeout: float,
) -> list[SendResult]:
    """Send each message in its own request, SEND_CONCURRENCY at a time; one result each, in order.

    The first request goes alone. After a 429 or a refused key no further request starts
    (the limit and the key are the account's): the rest come back with that outcome, unsent.
    Nor does one start once the batch has run for the request timeout, so a batch ends within
    about twice that (a claim must not outlive SEND_ABANDONED_SECONDS unanswered); those come
    back not_sent.
    """
    if not messages:
        return []
    deadline = clock() + timeout
    # The first request goes alone: when the account is limited or its key refused, one
    # request learns it, not SEND_CONCURRENCY of them.
    first = send_one(messages[0])
    results: list[SendResult | None] = [first, *[None] * (len(messages) - 1)]
    halted = first if first.outcome in ("rate_limited", "unauthorized") else None
    state: dict[str, Any] = {"next": 1, "halt": halted}
    lock = threading.Lock()

    def work() -> None:
        while True:
            with lock:
                index = state["next"]
                if state["halt"] is not None or index >= len(messages) or clock() > deadline:
                    return
                state["next"] = index + 1
            result = send_one(messages[index])
            results[index] = result
            if result.outcome in ("rate_limited", "unauthorized"):
                with lock:
                    state["halt"] = state["halt"] or result

    threads = [threading.Thread(target=work) for _ in range(min(SEND_CONCURRENCY, len(messages) - 1))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    halt: SendResult | None = state["halt"]
    unsent = SendResult("not_sent", error="not sent yet: the batch ran out of time")
    if halt is not None:
        unsent = SendResult(halt.outcome, error=f"not sent: {halt.error}", retry_after=halt.retry_after)
    return [result or unsent for result in results]


def mail_body(message: OutgoingMessage, *, track_opens: bool, track_clicks: bool) -> dict[str, Any]:
    """Build the Mail Send request body for one message; track_opens/track_clicks: the account's
    wish, asked for only where the message can be tracked (an HTML part, a link in it)."""
    body: dict[str, Any] = {
        "personalizations": [
            {
                "to": [_address(message.to_address, message.to_name)],
                # Per personalization, because the spec types message-level custom_args as a string.
                "custom_args": {APP_ID_ARG: message.app_message_id},
            }
        ],
        "from": _address(message.from_address, message.from_name),
        "subject": message.subject,
        "content": _content(message),
        "tracking_settings": {
            "click_tracking": {"enable": track_clicks and message.track_links, "enable_text": False},
            "open_tracking": {"enable": track_opens and message.track_opens},
        },
    }
    if message.attachments:
        body["attachments"] = [
            {
                "content": base64.b64encode(attachment.content).decode("ascii"),
                "filename": attachment.filename,
                "type": attachment.content_type,
                "disposition": "attachment",
            }
            for attachment in message.attachments
        ]
    if message.reply_to:
        body["reply_to"] = {"email": message.reply_to}
    if message.category:
        body["categories"] = [message.category]
    return body


def _content(message: OutgoingMessage) -> list[dict[str, str]]:
    """The parts, text/plain first (SendGrid's rule), then text/html; never an empty value."""
    parts = []
    if message.body_text or not message.body_html:
        parts.append({"type": "text/plain", "value": message.body_text})
    if message.body_html:
        parts.append({"type": "text/html", "value": message.body_html})
    return parts


def _address(email: str, name: str) -> dict[str, str]:
    """Return a SendGrid email object, without an empty name."""
    return {"email": email, "name": name} if name else {"email": email}


def _send_reject_reason(response: httpx.Response) -> RejectReason:
    """Say in our words why Mail Send refused a message: its recipient's address, or something else."""
    try:
        errors = response.json().get("errors")
    except (ValueError, AttributeError):
        return "other"
    for error in errors if isinstance(errors, list) else []:
        field = error.get("field") if isinstance(error, dict) else None
        if isinstance(field, str) and _RECIPIENT_FIELD.fullmatch(field):
            return "invalid_address"
    return "other"
