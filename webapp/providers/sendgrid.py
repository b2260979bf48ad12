"""SendGrid v3: Mail Send, Email Activity polling, the spam-report list, and the signed event webhook.

The same real event can reach us twice: pushed by the event webhook and pulled by polling the
Email Activity API. The two name events differently and carry different fields, so both paths
build ProviderEvents from the same few fields (our app_message_id, kind, whole-second time, url,
attempt) and the events deduplicate against each other.
"""

from __future__ import annotations

import ast
import base64
import binascii
import hashlib
import json
import math
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any
from urllib.parse import quote

import httpx
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key

from webapp import clock as app_clock
from webapp import intake_text
from webapp.providers.base import (
    AcceptedResult,
    EmailProvider,
    LiftResult,
    OutgoingMessage,
    PollRef,
    PollResult,
    ProviderError,
    ProviderEvent,
    RecordsCost,
    RejectReason,
    SendResult,
    SentRef,
    WebhookVerdict,
)

# The custom arg that carries our own id to SendGrid and back in every event.
APP_ID_ARG = "app_message_id"
SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"

DEFAULT_RETRY_AFTER = 60.0
ACTIVITY_MAX_LIMIT = 1000
# How many of our ids one Email Activity query asks about (the query travels in the URL).
FIND_BATCH_SIZE = 50
SPAM_REPORTS_PAGE = 500
# One Mail Send request carries one body for all its recipients (per-recipient bodies need
# templates), so a batch is this many single requests, a few at a time over one connection pool.
SEND_BATCH_SIZE = 50
SEND_CONCURRENCY = 8
# SendGrid caps custom args at 10,000 bytes; anything much longer is not unique_args text.
MAX_UNIQUE_ARGS_CHARS = 20_000

# Email Activity event names -> our event kinds (the webhook spells several differently).
POLLED_KINDS: dict[str, str] = {
    "processed": "processed",
    "delivered": "delivered",
    "deferred": "deferred",
    "dropped": "dropped",
    "bounced": "bounce",
    "opened": "open",
    "clicked": "click",
    "spam_report": "spamreport",
    "unsubscribe": "unsubscribe",
    "group_unsubscribe": "group_unsubscribe",
    "group_resubscribe": "group_resubscribe",
}

# Event webhook names that are also our event kinds.
WEBHOOK_KINDS: frozenset[str] = frozenset(
    {
        "processed",
        "delivered",
        "deferred",
        "bounce",
        "dropped",
        "open",
        "click",
        "spamreport",
        "unsubscribe",
        "group_unsubscribe",
        "group_resubscribe",
    }
)

# SendGrid's drop reasons (lower-cased) -> ours; any other text is "other", kept as SendGrid wrote it.
DROP_REASONS: dict[str, RejectReason] = {
    "spam reporting address": "spam_report",
    "bounced address": "bounced_address",
    "invalid": "invalid_address",
    "invalid address": "invalid_address",
    "unsubscribed address": "unsubscribed",
    "unsubscribed group": "unsubscribed",
}
# A Mail Send 400 naming one of these fields refuses the recipient's address itself.
_RECIPIENT_FIELD = re.compile(r"personalizations\.\d+\.to(\.\d+\.email)?")

_DIGITS = re.compile(r"[0-9]{1,15}")
# A host name of SendGrid's mail servers, as a dot-separated part of an sg_message_id: the current
# format is "<X-Message-Id>.<filter host>...", older ones start with the host and name no request.
_SERVER_HOST = re.compile(r"(?:filter|ismtpd|smtpd|recvd|geopod)[A-Za-z0-9-]*[0-9][A-Za-z0-9-]*")
# The webhook's smtp-id, "<X-Message-Id@ismtpd...>", when SendGrid's own MTA made the Message-ID
# (a Message-ID the sender chose names no request).
_SMTP_ID = re.compile(r"<([A-Za-z0-9_.=+-]{1,100})@ismtpd[A-Za-z0-9.-]*>")
_MESSAGE_ID_CHARS = re.compile(r"[A-Za-z0-9_.=+-]{1,100}")
_MILLISECONDS_FROM = 10**11  # a unix time in seconds stays below this until the year 5138
# Events are flat objects with a few short lists (categories): a little room, no more.
MAX_WEBHOOK_DEPTH = 8


class _RequestFailed(ProviderError):
    """A non-send request got no usable answer; status is None when there was no answer at all."""

    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message, retry_after)
        self.status = status


class SendGridProvider(EmailProvider):
    """The SendGrid v3 Web API, spoken over httpx (also to the sandbox, through a WSGI transport)."""

    name = "sendgrid"
    credentials_hint = "SENDGRID_API_KEY and its Mail Send permission"
    records_hint = "the Email Activity add-on (API access to the message history) and the event webhook"
    max_batch = SEND_BATCH_SIZE
    # Email Activity's documented limit is 6 requests a minute; one query asks about 50 of our ids.
    records_cost = RecordsCost(requests_per_minute=6, emails_per_lookup=FIND_BATCH_SIZE)

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
        self._webhook_public_key = webhook_public_key
        self._webhook_tolerance = webhook_tolerance_seconds
        self._client = httpx.Client(
            base_url=api_base,
            transport=transport,
            timeout=timeout,
            headers={
                "Authorization": f"Bearer {api_key}",
                "Accept": "application/json",
                "User-Agent": "clinic-email-log",
            },
        )
        self._track_opens = track_opens
        self._track_clicks = track_clicks
        self._clock = clock
        self._timeout = timeout

    def close(self) -> None:
        """Close the HTTP connections."""
        self._client.close()

    # Sending

    def send(self, message: OutgoingMessage) -> SendResult:
        """POST one message to /v3/mail/send and say what became of it."""
        try:
            response = self._client.post("/v3/mail/send", json=self._mail_body(message))
        except httpx.RequestError as error:
            return SendResult("in_doubt", error=f"no answer from SendGrid ({type(error).__name__}: {error})")
        status = response.status_code
        if 200 <= status < 300:
            return SendResult("accepted", provider_message_id=response.headers.get("X-Message-Id"))
        error_text = _error_text(response)
        if status in (401, 403):
            return SendResult("unauthorized", error=error_text)
        if status == 429:
            return SendResult("rate_limited", error=error_text, retry_after=self._retry_after(response))
        if status >= 500:
            return SendResult("unavailable", error=error_text)
        return SendResult("rejected", error=error_text, reject_reason=_send_reject_reason(response))

    def send_batch(self, messages: list[OutgoingMessage]) -> list[SendResult]:
        """Send each message in its own request, SEND_CONCURRENCY at a time; one result each, in order.

        The first request goes alone. After a 429 or a refused key no further request starts
        (the limit and the key are the account's): the rest come back with that outcome, unsent.
        Nor does one start once the batch has run for the request timeout, so a batch ends within
        about twice that (a claim must not outlive SEND_ABANDONED_SECONDS unanswered); those come
        back not_sent.
        """
        if not messages:
            return []
        deadline = self._clock() + self._timeout
        # The first request goes alone: when the account is limited or its key refused, one
        # request learns it, not SEND_CONCURRENCY of them.
        first = self.send(messages[0])
        results: list[SendResult | None] = [first, *[None] * (len(messages) - 1)]
        halted = first if first.outcome in ("rate_limited", "unauthorized") else None
        state: dict[str, Any] = {"next": 1, "halt": halted}
        lock = threading.Lock()

        def work() -> None:
            while True:
                with lock:
                    index = state["next"]
                    if state["halt"] is not None or index >= len(messages) or self._clock() > deadline:
                        return
                    state["next"] = index + 1
                result = self.send(messages[index])
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

    def _mail_body(self, message: OutgoingMessage) -> dict[str, Any]:
        """Build the Mail Send request body for one message."""
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
            "content": [{"type": "text/plain", "value": message.body_text}],
            "tracking_settings": {
                "open_tracking": {"enable": self._track_opens},
                # Our emails are plain text, so click tracking only works with enable_text.
                "click_tracking": {"enable": self._track_clicks, "enable_text": self._track_clicks},
            },
        }
        if message.reply_to:
            body["reply_to"] = {"email": message.reply_to}
        if message.category:
            body["categories"] = [message.category]
        return body

    def _retry_after(self, response: httpx.Response) -> float:
        """Seconds to wait after a 429: Retry-After if given (no clock skew), else X-RateLimit-Reset."""
        retry_after = response.headers.get("Retry-After", "").strip()
        if _DIGITS.fullmatch(retry_after):
            return max(1.0, float(retry_after))
        reset = response.headers.get("X-RateLimit-Reset", "").strip()
        if _DIGITS.fullmatch(reset):
            return max(1.0, float(reset) - self._clock())
        return DEFAULT_RETRY_AFTER

    # Email Activity

    def find_accepted(self, refs: list[SentRef], request_budget: int) -> AcceptedResult:
        """Ask Email Activity which of these messages SendGrid took, many in one request.

        A list answer names each message's recipient but not its custom args, so one request asks
        about emails to different addresses only, and tells them apart by address; emails that
        share an address wait for a later request. A listed message whose address matches none of
        ours costs one more request, for its details.
        """
        found: dict[str, str | None] = {}
        checked: set[str] = set()
        pending = list(refs)
        requests_made = 0
        while pending and requests_made < request_budget:
            batch: dict[str, SentRef] = {}
            later: list[SentRef] = []
            for ref in pending:
                address = ref.to_address.strip().lower()
                if address in batch or len(batch) >= FIND_BATCH_SIZE:
                    later.append(ref)
                else:
                    batch[address] = ref
            pending = later
            query = " OR ".join(_app_id_term(ref.app_message_id) for ref in batch.values())
            # Room for a second copy of each, so a full page means "there may be more".
            limit = min(ACTIVITY_MAX_LIMIT, 2 * len(batch) + 1)
            requests_made += 1
            try:
                listed = _messages_of(self._get_json(_messages_url(query, limit)))
            except _RequestFailed as failure:
                return AcceptedResult(
                    found,
                    frozenset(checked),
                    requests_made,
                    rate_limited_for=failure.retry_after,
                    error=None if failure.retry_after is not None else str(failure),
                )
            complete = len(listed) < limit
            by_app_id = {ref.app_message_id: ref for ref in batch.values()}
            for item in listed:
                msg_id = str(item.get("msg_id", ""))
                ref = batch.get(str(item.get("to_email", "")).strip().lower())
                if ref is None and msg_id and requests_made < request_budget:
                    # The address reads differently from ours: the message's details name our id.
                    requests_made += 1
                    try:
                        detail = self._get_json(f"/v3/messages/{quote(msg_id, safe='')}")
                    except _RequestFailed:
                        detail = {}
                    unique_args = detail.get("unique_args") if isinstance(detail, dict) else None
                    ref = by_app_id.get(str(_unique_args(unique_args).get(APP_ID_ARG)))
                if ref is None:
                    complete = False  # a message we cannot tell apart: "not found" proves nothing
                    continue
                found.setdefault(ref.app_message_id, x_message_id(msg_id))
            checked.update(
                ref.app_message_id for ref in batch.values() if complete or ref.app_message_id in found
            )
        return AcceptedResult(found, frozenset(checked), requests_made)

    def poll(self, refs: list[PollRef], request_budget: int) -> PollResult:
        """List the messages with one request, then fetch each one's events while the budget lasts."""
        if not refs or request_budget < 1:
            return PollResult(events={})
        requested = {ref.app_message_id for ref in refs}
        by_x_message_id = {
            ref.provider_message_id: ref.app_message_id for ref in refs if ref.provider_message_id
        }
        query = " OR ".join(_app_id_term(ref.app_message_id) for ref in refs)
        # Room for a second copy of a message whose first send was in doubt.
        limit = min(ACTIVITY_MAX_LIMIT, 2 * len(refs))
        events: dict[str, list[ProviderEvent]] = {}
        requests_made = 1
        try:
            listed = _messages_of(self._get_json(_messages_url(query, limit)))
        except _RequestFailed as failure:
            return _stopped(events, requests_made, failure)

        order = {x_message_id: position for position, x_message_id in enumerate(by_x_message_id)}
        listed.sort(key=lambda item: order.get(x_message_id(item.get("msg_id")) or "", len(order)))
        not_reached: set[str] = set()
        for position, item in enumerate(listed):
            if requests_made >= request_budget:
                not_reached = _owners_of(listed[position:], requested, by_x_message_id)
                break
            msg_id = str(item.get("msg_id", ""))
            if not msg_id:
                continue
            requests_made += 1
            try:
                detail = self._get_json(f"/v3/messages/{quote(msg_id, safe='')}")
            except _RequestFailed as failure:
                if failure.status == 404:
                    continue
                return _stopped(events, requests_made, failure)
            app_id = _owner(detail, requested, by_x_message_id)
            if app_id is not None:
                events.setdefault(app_id, []).extend(_polled_events(detail, app_id))
        return PollResult(
            events=events, requests_made=requests_made, covered=frozenset(requested - not_reached)
        )

    # Suppressions

    def spam_reports(self, since: datetime | None = None) -> list[tuple[str, datetime]]:
        """Return every address on SendGrid's spam-report list (reported since `since`, if given)."""
        params: dict[str, int] = {"limit": SPAM_REPORTS_PAGE, "offset": 0}
        if since is not None:
            params["start_time"] = int(since.timestamp())
        reports: list[tuple[str, datetime]] = []
        while True:
            page = self._get_json("/v3/suppression/spam_reports", params=params)
            if not isinstance(page, list):
                raise ProviderError("SendGrid's spam-report list was not a JSON array")
            for item in page:
                try:
                    created = datetime.fromtimestamp(_number(item["created"]), UTC)
                    reports.append((item["email"].strip().lower(), created))
                except (KeyError, TypeError, AttributeError, ValueError, OverflowError, OSError):
                    raise ProviderError(
                        f"SendGrid's spam-report list has an unreadable entry: {item!r}"
                    ) from None
            if len(page) < SPAM_REPORTS_PAGE:
                return reports
            params["offset"] += SPAM_REPORTS_PAGE

    def remove_spam_report(self, address: str) -> LiftResult:
        """Delete one address from SendGrid's spam-report list."""
        response = self._request("DELETE", f"/v3/suppression/spam_reports/{quote(address, safe='@')}")
        if response.status_code != 204:
            raise ProviderError(
                f"SendGrid did not remove {address} from the spam-report list "
                f"(HTTP {response.status_code}: {_error_text(response)})"
            )
        return LiftResult("lifted")

    # Event webhook

    def verify_webhook(self, headers: Mapping[str, str], body: bytes, now: float) -> WebhookVerdict:
        """Check the ECDSA signature; a copy is a replay while its timestamp is within the tolerance.

        A correctly signed request says how far the clocks differ (skew_seconds), also when that is
        beyond the tolerance and the request is refused, so an operator can be told why.
        """
        timestamp = headers.get(TIMESTAMP_HEADER, "")
        signature = headers.get(SIGNATURE_HEADER)
        key, tolerance = self._webhook_public_key, self._webhook_tolerance
        authentic = verify_signature(key, signature, timestamp, body, tolerance_seconds=tolerance, now=now)
        if not authentic:
            # Signed correctly, but at a time too far from ours? (Checked again as if it were then.)
            late = _DIGITS.fullmatch(timestamp or "") is not None and abs(now - int(timestamp)) > tolerance
            signed = late and verify_signature(
                key, signature, timestamp, body, tolerance_seconds=0, now=int(timestamp)
            )
            return WebhookVerdict(False, skew_seconds=now - int(timestamp) if signed else None)
        # Keyed on what was signed, not on the signature: an ECDSA signature has a twin, (r, n - s).
        # Remembered until the timestamp leaves the window, so a copy is a replay for as long as it
        # would be accepted, however wide the tolerance.
        replay_key = hashlib.sha256(timestamp.encode() + b"." + body).hexdigest()
        return WebhookVerdict(
            True, replay_key, int(timestamp) + tolerance - now, skew_seconds=now - int(timestamp)
        )

    def parse_webhook(self, body: bytes) -> list[ProviderEvent]:
        """Parse a JSON array of SendGrid events; ValueError when it is malformed."""
        return parse_webhook_events(body)

    def check_webhook(self, body: bytes) -> int:
        """Check a body is a well-formed batch without building its events; return how many it holds."""
        return check_webhook_body(body)

    # HTTP plumbing for everything but sending

    def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """Make one request; raise _RequestFailed when there is no answer or a 429."""
        try:
            response = self._client.request(method, url, **kwargs)
        except httpx.RequestError as error:
            raise _RequestFailed(f"no answer from SendGrid ({type(error).__name__}: {error})") from error
        if response.status_code == 429:
            raise _RequestFailed(
                f"SendGrid rate limit: {_error_text(response)}", 429, retry_after=self._retry_after(response)
            )
        return response

    def _get_json(self, url: str, **kwargs: Any) -> Any:
        """GET a JSON document; raise _RequestFailed unless the answer is 200 with JSON."""
        response = self._request("GET", url, **kwargs)
        if response.status_code != 200:
            raise _RequestFailed(
                f"SendGrid answered HTTP {response.status_code}: {_error_text(response)}",
                response.status_code,
            )
        try:
            return intake_text.loads(response.content)
        except ValueError as error:
            raise _RequestFailed(
                f"SendGrid answered with invalid JSON: {error}", response.status_code
            ) from error


def _address(email: str, name: str) -> dict[str, str]:
    """Return a SendGrid email object, without an empty name."""
    return {"email": email, "name": name} if name else {"email": email}


def _error_text(response: httpx.Response) -> str:
    """Return SendGrid's own error messages (with the field each names), or the raw text (storable)."""
    try:
        errors = intake_text.loads(response.content).get("errors")
    except (ValueError, AttributeError):
        errors = None
    if isinstance(errors, list):
        messages = []
        for error in errors:
            if isinstance(error, dict) and error.get("message"):
                field = error.get("field")
                messages.append(f"{error['message']} ({field})" if field else str(error["message"]))
        if messages:
            return "; ".join(messages)
    return intake_text.storable(f"HTTP {response.status_code}: {response.text[:500]}".strip())


def x_message_id(sg_message_id: Any, smtp_id: Any = None) -> str | None:
    """Return the X-Message-Id (the send request's id) an event or message names, or None."""
    if _short_text(sg_message_id) and _short_text(smtp_id):
        # An email's events come in several batches to one worker: each id is worked out once
        # (and only short ids are kept: the cache holds what senders of webhooks choose).
        return _x_message_id_of_text(sg_message_id, smtp_id)
    return _x_message_id(sg_message_id, smtp_id)


def _short_text(value: Any) -> bool:
    return value is None or (isinstance(value, str) and len(value) <= 200)


@lru_cache(maxsize=16_384)
def _x_message_id_of_text(sg_message_id: str | None, smtp_id: str | None) -> str | None:
    return _x_message_id(sg_message_id, smtp_id)


def _x_message_id(sg_message_id: Any, smtp_id: Any) -> str | None:
    """Work out x_message_id.

    The current sg_message_id (Email Activity's msg_id) is "<X-Message-Id>.<filter host>...";
    an older one starts with the host name ("filter0123p1mdw1.13432.5B3A6F4C13.0") and names no
    request, so the webhook's smtp-id ("<X-Message-Id@ismtpd...>") is asked instead.
    """
    if isinstance(sg_message_id, str):
        parts = sg_message_id.strip().split(".")
        cut = next((index for index, part in enumerate(parts) if _SERVER_HOST.fullmatch(part)), 1)
        # Old documented ids carry dots of their own before the host ("14c5d75ce93.dfd.64b469.filter0001...").
        prefix = ".".join(parts[:cut])
        if prefix and _MESSAGE_ID_CHARS.fullmatch(prefix):
            return prefix
    if isinstance(smtp_id, str):
        match = _SMTP_ID.fullmatch(smtp_id.strip())
        if match:
            return match.group(1)
    return None


def _app_id_term(app_message_id: str) -> str:
    """Return the Email Activity query term that finds messages carrying our id."""
    escaped = app_message_id.replace("\\", "\\\\").replace('"', '\\"')
    return f"unique_args['{APP_ID_ARG}']=\"{escaped}\""


def _messages_url(query: str, limit: int) -> str:
    """Build the Email Activity list URL, with spaces encoded as %20 as SendGrid documents."""
    return f"/v3/messages?query={quote(query, safe='')}&limit={limit}"


def _messages_of(document: Any) -> list[dict[str, Any]]:
    """Return the `messages` list of an Email Activity answer."""
    messages = document.get("messages") if isinstance(document, dict) else None
    if not isinstance(messages, list):
        raise _RequestFailed("SendGrid's Email Activity answer had no messages list")
    return [item for item in messages if isinstance(item, dict)]


def _stopped(
    events: dict[str, list[ProviderEvent]], requests_made: int, failure: _RequestFailed
) -> PollResult:
    """Return what a poll got before a failure stopped it."""
    if failure.retry_after is not None:
        return PollResult(events=events, requests_made=requests_made, rate_limited_for=failure.retry_after)
    return PollResult(events=events, requests_made=requests_made, error=str(failure))


def _owners_of(items: list[Any], requested: set[str], by_x_message_id: dict[str, str]) -> set[str]:
    """Return our ids of listed messages whose details were not fetched; when a message cannot be
    told apart (no X-Message-Id known yet), every email without one counts as not reached."""
    owners: set[str] = set()
    for item in items:
        prefix = x_message_id(item.get("msg_id")) if isinstance(item, dict) else None
        if prefix in by_x_message_id:
            owners.add(by_x_message_id[prefix])
        else:
            owners |= requested - set(by_x_message_id.values())
    return owners


def _owner(detail: Any, requested: set[str], by_x_message_id: dict[str, str]) -> str | None:
    """Return our id of a polled message: from its unique_args, else from its X-Message-Id prefix."""
    if not isinstance(detail, dict):
        return None
    app_id = _unique_args(detail.get("unique_args")).get(APP_ID_ARG)
    if isinstance(app_id, str) and app_id in requested:
        return app_id
    return by_x_message_id.get(x_message_id(detail.get("msg_id")) or "")


def _unique_args(text: Any) -> dict[str, Any]:
    """Read Email Activity's unique_args: JSON-ish text such as "{'app_message_id': 'x'}"."""
    if isinstance(text, dict):
        return text
    if not isinstance(text, str) or len(text) > MAX_UNIQUE_ARGS_CHARS:
        return {}
    for parse in (json.loads, ast.literal_eval):
        try:
            value = parse(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
        if isinstance(value, dict):
            return value
    return {}


def _polled_events(detail: dict[str, Any], app_message_id: str) -> Iterator[ProviderEvent]:
    """Turn one Email Activity message's events[] into ProviderEvents."""
    provider_message_id = x_message_id(detail.get("msg_id"))
    recipient = detail.get("to_email")
    for raw in detail.get("events") or []:
        if not isinstance(raw, dict):
            continue
        occurred_at = _iso_time(raw.get("processed"))
        if occurred_at is None:
            continue
        kind = POLLED_KINDS.get(str(raw.get("event_name")), "unknown")
        yield ProviderEvent(
            kind=kind,
            occurred_at=occurred_at,
            app_message_id=app_message_id,
            provider_message_id=provider_message_id,
            recipient=recipient if isinstance(recipient, str) else None,
            reason=_text(raw.get("reason")),
            url=_text(raw.get("url")) if kind == "click" else None,
            attempt=_whole_number(raw.get("attempt_num")) if kind == "deferred" else None,
            reject_reason=reject_reason_of(_text(raw.get("reason"))) if kind == "dropped" else None,
            raw=raw,
        )


def _iso_time(value: Any) -> datetime | None:
    """Parse an ISO 8601 time as an aware UTC datetime (naive times are UTC)."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _text(value: Any) -> str | None:
    """Return a non-empty string, else None."""
    return value if isinstance(value, str) and value else None


def _whole_number(value: Any) -> int | None:
    """Return an int from an int or a digit string (the webhook sends `attempt` as a string)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and _DIGITS.fullmatch(value.strip()):
        return int(value)
    return None


def _number(value: Any) -> float:
    """Return a unix time given as a number or a digit string; raise ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError("a boolean is not a time")
    if isinstance(value, str) and _DIGITS.fullmatch(value.strip()):
        return float(value)
    if isinstance(value, int | float) and math.isfinite(value) and value >= 0:
        return float(value)
    raise ValueError(f"{value!r} is not a unix time")


# Event webhook


def verify_signature(
    public_key_b64: str,
    signature_b64: str | None,
    timestamp: str | None,
    body: bytes,
    *,
    tolerance_seconds: int,
    now: float | None = None,
) -> bool:
    """Check SendGrid's ECDSA signature over timestamp + raw body, and that the timestamp is fresh."""
    if not public_key_b64 or not signature_b64 or not timestamp or not _DIGITS.fullmatch(timestamp):
        return False
    current = app_clock.timestamp() if now is None else now
    if abs(current - int(timestamp)) > tolerance_seconds:
        return False
    key = _public_key(public_key_b64)
    if key is None:
        return False
    try:
        signature = base64.b64decode(signature_b64, validate=True)
        key.verify(signature, timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    except (binascii.Error, ValueError, InvalidSignature):
        return False
    return True


@lru_cache(maxsize=8)
def _public_key(public_key_b64: str) -> ec.EllipticCurvePublicKey | None:
    """Load a base64 DER SubjectPublicKeyInfo P-256 key, as SendGrid shows it; None if it is not one."""
    try:
        key = load_der_public_key(base64.b64decode(public_key_b64.strip(), validate=True))
    except (binascii.Error, ValueError, TypeError, UnsupportedAlgorithm):
        return None
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    return None


def parse_webhook_events(body: bytes) -> list[ProviderEvent]:
    """Parse an event webhook body (a JSON array of events); ValueError if it is not one."""
    return [_webhook_event(item, position) for position, item in enumerate(_webhook_items(body))]


def _webhook_items(body: bytes) -> list:
    """Return the JSON array of an event webhook body; ValueError if it is not a flat one."""
    try:
        # orjson first (about a third of the standard module's time on a 1,000-event body); what a
        # database would refuse (a NUL, a lone surrogate) comes back as U+FFFD, not as a refusal.
        items = intake_text.loads(body)
    except ValueError as error:
        raise ValueError(f"the event webhook body is not JSON: {error}") from None
    if not isinstance(items, list):
        raise ValueError("the event webhook body is not a JSON array")
    if _nests_deeper_than(items, MAX_WEBHOOK_DEPTH):
        # Real events are flat; deep nesting only makes storing and rendering them costly.
        raise ValueError("the event webhook body nests too deeply")
    return items


def check_webhook_body(body: bytes) -> int:
    """Check an event webhook body the way parse_webhook_events would, without building the events
    (the route only needs to know it is well-formed); return how many events it holds."""
    items = _webhook_items(body)
    for position, item in enumerate(items):
        _event_name_and_time(item, position)
    return len(items)


def _event_name_and_time(item: Any, position: int) -> tuple[str, datetime]:
    """Read a webhook event's type and time; ValueError when the event lacks either."""
    if not isinstance(item, dict):
        raise ValueError(f"event {position} of the webhook body is not an object")
    name = item.get("event")
    if not isinstance(name, str) or not name:
        raise ValueError(f"event {position} of the webhook body has no event type")
    if "timestamp" not in item:
        raise ValueError(f"event {position} of the webhook body has no timestamp")
    try:
        seconds = _number(item["timestamp"])
        return name, datetime.fromtimestamp(seconds / 1000 if seconds > _MILLISECONDS_FROM else seconds, UTC)
    except (ValueError, OverflowError, OSError) as error:
        raise ValueError(f"event {position} of the webhook body has a bad timestamp: {error}") from None


def _nests_deeper_than(value: Any, limit: int) -> bool:
    """Return whether JSON arrays and objects nest more than `limit` levels (without recursion)."""
    level = [value] if isinstance(value, dict | list) else []
    depth = 1
    while level:
        if depth > limit:
            return True
        # One level at a time, and only containers go on: events are flat, mostly scalars.
        level = [
            child
            for item in level
            for child in (item.values() if type(item) is dict else item)
            if type(child) is dict or type(child) is list
        ]
        depth += 1
    return False


def _webhook_event(item: Any, position: int) -> ProviderEvent:
    """Turn one webhook event object into a ProviderEvent."""
    name, occurred_at = _event_name_and_time(item, position)
    kind = name if name in WEBHOOK_KINDS else "unknown"
    if kind in ("deferred", "delivered"):
        reason = _text(item.get("response")) or _text(item.get("reason"))
    else:
        reason = _text(item.get("reason"))
    return ProviderEvent(
        kind=kind,
        occurred_at=occurred_at,
        app_message_id=_text(item.get(APP_ID_ARG)),
        provider_message_id=x_message_id(item.get("sg_message_id"), item.get("smtp-id")),
        recipient=_text(item.get("email")),
        reason=reason,
        url=_text(item.get("url")) if kind == "click" else None,
        attempt=_whole_number(item.get("attempt")) if kind == "deferred" else None,
        machine=kind == "open" and _truthy(item.get("sg_machine_open")),
        reject_reason=reject_reason_of(reason) if kind == "dropped" else None,
        raw=item,
    )


def _truthy(value: Any) -> bool:
    """Read a JSON flag that may arrive as a boolean or as text."""
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1")
    return value is True or value == 1


def reject_reason_of(reason: str | None) -> RejectReason:
    """Say in our words why SendGrid dropped an email, from its drop reason."""
    return DROP_REASONS.get((reason or "").strip().lower(), "other")


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
