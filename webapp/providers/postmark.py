"""Postmark: the Email API (single and batch), the Messages API, suppressions, and webhooks.

Postmark differs from SendGrid where it matters to us:
- a send to a suppressed address is refused at once (HTTP 422, ErrorCode 406), not accepted and
  dropped later; a batch answers 200 with one result per message, in request order;
- webhooks carry one event per POST and are not signed: the URL carries HTTP Basic credentials;
- no webhook says "processed": acceptance is the signal, and the Messages API's details confirm it;
- a spam complaint cannot be lifted through the API; only Postmark's support can reactivate it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote

import httpx
from werkzeug.datastructures import Authorization

from webapp import intake_text
from webapp.bounce_reasons import best_text
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

# The Metadata key that carries our own id to Postmark and back (keys may have 20 characters).
APP_ID_KEY = "app_message_id"
TOKEN_HEADER = "X-Postmark-Server-Token"
MAX_BATCH = 500  # Postmark's limit per /email/batch call
# A batch's first request carries this many messages: an outage then puts one email in doubt.
FIRST_REQUEST = 1
# After a request Postmark failed (5xx, no answer), the rest of its batch waits this long.
FAILED_REQUEST_WAIT = 30.0
# Postmark documents no Retry-After for its 429: wait a minute unless it says otherwise.
DEFAULT_RETRY_AFTER = 60.0
# A webhook carries one event; real ones are a few kilobytes (a bounce may include content).
MAX_WEBHOOK_BYTES = 1024 * 1024
# A webhook body seen again this soon is a replay (Postmark retries for up to about 10.5 hours).
REPLAY_SECONDS = 24 * 60 * 60
MAX_WEBHOOK_DEPTH = 8
SEARCH_PAGE = 50
# Postmark publishes no request limit for its Messages API, only that a 429 means "slow down"; the
# search filters on one metadata value, so each in-doubt email costs one request. Four a second
# keeps a backlog of a few hundred moving without bursts; a 429 holds every worker back.
RECORDS_REQUESTS_PER_MINUTE = 240
SUPPRESSIONS_PAGE_LIMIT = 20  # pages of the suppressions dump read in one spam_reports call
MAX_INACTIVE_LOOKUPS = 20  # per send_batch: why an address is inactive, asked of the dump

ERROR_INVALID_TOKEN = 10
ERROR_INVALID_REQUEST = 300
ERROR_INACTIVE_RECIPIENT = 406

# Bounce Types (never TypeCode: Postmark's own examples disagree on it) -> our event kinds.
# Temporary: Postmark keeps trying, so the email is Deferred.
DEFERRED_BOUNCES = frozenset({"Transient", "DnsError"})
# Permanent for this email: Failed, with why in our words.
FAILED_BOUNCES: dict[str, RejectReason] = {
    "HardBounce": "bounced_address",
    "BadEmailAddress": "invalid_address",
    "SoftBounce": "other",  # Postmark retried and stopped; the address stays active
    "Blocked": "other",
    "DMARCPolicy": "other",
    "VirusNotification": "other",
    "SMTPApiError": "other",
    "TemplateRenderingFailed": "other",
    "ManuallyDeactivated": "other",
    "Unconfirmed": "other",
    "Unknown": "other",
    "InboundError": "other",
}
# Bounce records that are no failure: out of office and list requests (timeline only), and a
# SpamNotification (delivered, then filed as spam by the receiving side: not the client's report).
INFORMATIONAL_BOUNCES: dict[str, str] = {
    "SpamNotification": "spam_filtered",
    "Unsubscribe": "unsubscribe",
    "Subscribe": "group_resubscribe",
    "AutoResponder": "unknown",
    "AddressChange": "unknown",
    "ChallengeVerification": "unknown",
    "OpenRelayTest": "unknown",
}

# Messages API MessageEvents Types -> our event kinds.
MESSAGE_EVENT_KINDS: dict[str, str] = {
    "Delivered": "delivered",
    "Transient": "deferred",
    "Opened": "open",
    "LinkClicked": "click",
    "Bounced": "bounce",
    "SubscriptionChanged": "unknown",
}
# Messages API Status values that mean Postmark has the message (our Processed).
ACCEPTED_STATUSES = frozenset({"Sent", "Queued", "Processed"})

SUPPRESSION_REASONS: dict[str, RejectReason] = {
    "HardBounce": "bounced_address",
    "SpamComplaint": "spam_report",
}

_TIME = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})[T ](?P<time>\d{2}:\d{2}(?::\d{2})?)(?:\.(?P<fraction>\d{1,9}))?"
    r"(?P<zone>Z|[+-]\d{2}:?\d{2})?"
)
_INACTIVE = re.compile(r"Found inactive addresses: (.+?)\.(?:\s|$)")

LIFT_DETAIL = (
    "Postmark keeps spam complaints on its suppression list and lets only its own support reactivate "
    "them. Contact Postmark support (from the Postmark account, as a user with access to the server) "
    'and ask them to reactivate {address} on the message stream "{stream}" of our server, saying '
    "the recipient has asked in writing, from that address, to receive our emails again. Record it "
    "here once Postmark confirms."
)


class _RequestFailed(ProviderError):
    """A non-send request got no usable answer; status is None when there was no answer at all."""

    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message, retry_after)
        self.status = status


class PostmarkProvider(EmailProvider):
    """Postmark's server API, spoken over httpx with a server token."""

    name = "postmark"
    max_batch = MAX_BATCH
    credentials_hint = "POSTMARK_SERVER_TOKEN (the server's API token, not an account token)"
    records_hint = "the Messages API (it keeps 45 days by default) and the webhook's Basic credentials"
    records_cost = RecordsCost(RECORDS_REQUESTS_PER_MINUTE, emails_per_lookup=1, documented=False)

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
        self._client = httpx.Client(
            base_url=api_base,
            transport=transport,
            timeout=timeout,
            headers={
                TOKEN_HEADER: server_token,
                "Accept": "application/json",
                "User-Agent": "clinic-email-log",
            },
        )
        self._stream = message_stream
        self._track_opens = track_opens
        self._track_links = track_links
        self._clock = clock
        self._webhook_username = webhook_username
        self._webhook_password = webhook_password

    def close(self) -> None:
        """Close the HTTP connections."""
        self._client.close()

    def api_base(self) -> str:
        """Return the API base URL this provider talks to."""
        return str(self._client.base_url).rstrip("/")

    def message_stream(self) -> str:
        """Return the message stream messages are sent on (and whose suppressions are read)."""
        return self._stream

    # Sending

    def send(self, message: OutgoingMessage) -> SendResult:
        """POST one message to /email and say what became of it."""
        try:
            response = self._client.post("/email", json=self.message_body(message))
        except httpx.RequestError as error:
            return SendResult("in_doubt", error=f"no answer from Postmark ({type(error).__name__}: {error})")
        if response.status_code == 200:
            document = _json_or_none(response)
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
            response = self._client.post("/email/batch", json=[self.message_body(m) for m in messages])
        except httpx.RequestError as error:
            doubt = SendResult("in_doubt", error=f"no answer from Postmark ({type(error).__name__}: {error})")
            return [doubt] * len(messages), doubt
        if response.status_code != 200:
            # The whole batch was refused (bad token, over the limits, rate limit, outage).
            refused = self._failed_send(response, None)
            failed = refused.outcome in ("in_doubt", "unavailable", "rate_limited", "unauthorized")
            return [refused] * len(messages), refused if failed else None
        items = _json_or_none(response)
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
            "MessageStream": self._stream,
            "TrackOpens": self._track_opens,
            # Our emails are plain text, so link tracking must cover the text part.
            "TrackLinks": "HtmlAndText" if self._track_links else "None",
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
        text = _text(item.get("Message")) or ""
        message_id = _text(item.get("MessageID"))
        accepted_at = _optional_time(item.get("SubmittedAt"))
        if code == 0:
            return SendResult("accepted", provider_message_id=message_id, accepted_at=accepted_at)
        if code is None:
            # "Message accepted, but delivery may be delayed." comes without an ErrorCode.
            if message_id:
                return SendResult("accepted", provider_message_id=message_id, accepted_at=accepted_at)
            return SendResult(
                "in_doubt", error=f"Postmark's answer had neither ErrorCode nor MessageID: {text}"
            )
        if code == ERROR_INACTIVE_RECIPIENT:
            return SendResult(
                "rejected",
                error=_postmark_error(code, text),
                reject_reason=self._inactive_reason(address, lookups),
            )
        if code == ERROR_INVALID_REQUEST:
            return SendResult("rejected", error=_postmark_error(code, text), reject_reason="invalid_address")
        if code == ERROR_INVALID_TOKEN:
            return SendResult("unauthorized", error=_postmark_error(code, text))
        return SendResult("rejected", error=_postmark_error(code, text), reject_reason="other")

    def _failed_send(self, response: httpx.Response, address: str | None) -> SendResult:
        """Say what a non-200 answer to a send means."""
        status = response.status_code
        document = _json_or_none(response)
        if status == 422 and isinstance(document, dict):
            if address is None and document.get("ErrorCode") == ERROR_INACTIVE_RECIPIENT:
                return SendResult("rejected", error=_error_text(response), reject_reason="other")
            return self._item_result(document, address or "")
        error = _error_text(response)
        if status == 401:
            return SendResult("unauthorized", error=error)
        if status == 429:
            return SendResult("rate_limited", error=error, retry_after=_retry_after(response))
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
            entries = self._suppressions({"EmailAddress": address})
        except ProviderError:
            return "other"
        wanted = address.strip().lower()
        for entry in entries:
            if str(entry.get("EmailAddress", "")).strip().lower() != wanted:
                continue
            reason = entry.get("SuppressionReason")
            if reason in SUPPRESSION_REASONS:
                return SUPPRESSION_REASONS[reason]
            if reason == "ManualSuppression" and entry.get("Origin") == "Recipient":
                return "unsubscribed"  # the recipient unsubscribed through Postmark's link
            return "other"
        return "other"

    # Messages API

    def poll(self, refs: list[PollRef], request_budget: int) -> PollResult:
        """Fetch each message's details (its MessageEvents) while the budget lasts."""
        events: dict[str, list[ProviderEvent]] = {}
        covered: set[str] = set()
        requests_made = 0
        for ref in refs:
            if requests_made >= request_budget:
                break
            if not ref.provider_message_id:
                continue  # without Postmark's id there is nothing to ask about
            requests_made += 1
            try:
                detail = self._get_json(
                    f"/messages/outbound/{quote(ref.provider_message_id, safe='')}/details"
                )
            except _RequestFailed as failure:
                if failure.status in (404, 422):
                    continue  # unknown, or past Postmark's retention
                if failure.retry_after is not None:
                    return PollResult(
                        events,
                        requests_made,
                        rate_limited_for=failure.retry_after,
                        covered=frozenset(covered),
                    )
                return PollResult(events, requests_made, error=str(failure), covered=frozenset(covered))
            if not isinstance(detail, dict):
                continue
            found = list(_detail_events(detail, ref))
            # MessageEvents say only "Bounced": the bounce record's Type says whether it was a hard
            # bounce, a temporary one, a spam complaint or a spam notice (delivered: no failure).
            waiting: set[int] = set()
            for position, event in enumerate(found):
                bounce_id = _text(str((event.raw.get("Details") or {}).get("BounceID") or ""))
                if event.kind != "bounce" or not bounce_id or not bounce_id.isdigit():
                    continue
                if requests_made >= request_budget:
                    waiting.add(position)
                    continue
                requests_made += 1
                try:
                    record = self._get_json(f"/bounces/{bounce_id}")
                except _RequestFailed as failure:
                    if failure.status not in (404, 422):
                        waiting.add(position)  # no answer yet; "no such bounce" leaves it a bounce
                    continue
                if isinstance(record, dict):
                    found[position] = _with_bounce_type(event, record)
            # A bounce of unknown Type waits for the next poll (the email keeps its turn) or the webhook.
            events[ref.app_message_id] = [event for i, event in enumerate(found) if i not in waiting]
            if not waiting:
                covered.add(ref.app_message_id)
        return PollResult(events=events, requests_made=requests_made, covered=frozenset(covered))

    def find_accepted(self, refs: list[SentRef], request_budget: int) -> AcceptedResult:
        """Search outbound messages by our id in Metadata (one id per request: Postmark filters on
        one metadata field at a time)."""
        found: dict[str, str | None] = {}
        checked: set[str] = set()
        requests_made = 0
        for ref in refs:
            if requests_made >= request_budget:
                break
            requests_made += 1
            params = {
                "count": SEARCH_PAGE,
                "offset": 0,
                "messagestream": self._stream,
                f"metadata_{APP_ID_KEY}": ref.app_message_id,
            }
            try:
                document = self._get_json("/messages/outbound", params=params)
            except _RequestFailed as failure:
                return AcceptedResult(
                    found,
                    frozenset(checked),
                    requests_made,
                    rate_limited_for=failure.retry_after,
                    error=None if failure.retry_after is not None else str(failure),
                )
            messages = document.get("Messages") if isinstance(document, dict) else None
            if not isinstance(messages, list):
                return AcceptedResult(
                    found,
                    frozenset(checked),
                    requests_made,
                    error="Postmark's search answer had no Messages list",
                )
            for item in messages:
                metadata = item.get("Metadata") if isinstance(item, dict) else None
                if isinstance(metadata, dict) and str(metadata.get(APP_ID_KEY)) == ref.app_message_id:
                    found.setdefault(ref.app_message_id, _text(item.get("MessageID")))
            checked.add(ref.app_message_id)
        return AcceptedResult(found, frozenset(checked), requests_made)

    # Suppressions

    def spam_reports(self, since: datetime | None = None) -> list[tuple[str, datetime]]:
        """Return the addresses Postmark suppresses for a spam complaint on our message stream."""
        params: dict[str, str] = {"SuppressionReason": "SpamComplaint"}
        if since is not None:
            params["fromdate"] = since.astimezone(UTC).strftime("%Y-%m-%d")
        reports = []
        for entry in self._suppressions(params):
            try:
                created = parse_time(entry.get("CreatedAt"))
                address = entry["EmailAddress"].strip().lower()
            except (KeyError, AttributeError, ValueError):
                raise ProviderError(
                    f"Postmark's suppression list has an unreadable entry: {entry!r}"
                ) from None
            if entry.get("SuppressionReason", "SpamComplaint") == "SpamComplaint":
                reports.append((address, created))
        return reports

    def remove_spam_report(self, address: str) -> LiftResult:
        """Ask Postmark to delete the address's suppression; a spam complaint it refuses to lift."""
        path = f"/message-streams/{quote(self._stream, safe='')}/suppressions/delete"
        response = self._request("POST", path, json={"Suppressions": [{"EmailAddress": address}]})
        document = _json_or_none(response)
        if response.status_code != 200 or not isinstance(document, dict):
            raise ProviderError(
                f"Postmark did not remove {address} from the suppression list "
                f"(HTTP {response.status_code}: {_error_text(response)})"
            )
        wanted = address.strip().lower()
        for item in document.get("Suppressions") or []:
            if not isinstance(item, dict) or str(item.get("EmailAddress", "")).strip().lower() != wanted:
                continue
            if item.get("Status") == "Deleted":
                return LiftResult("lifted")
            if item.get("Status") == "Failed":
                said = _text(item.get("Message")) or "no reason given"
                return LiftResult(
                    "provider_request_needed",
                    f"Postmark refused: “{said}” " + LIFT_DETAIL.format(address=address, stream=self._stream),
                )
        raise ProviderError(f"Postmark's answer did not mention {address}: {response.text[:300]}")

    def _suppressions(self, params: dict[str, str]) -> list[dict[str, Any]]:
        """Read the suppressions dump of our stream (it pages by date: one call returns all)."""
        path = f"/message-streams/{quote(self._stream, safe='')}/suppressions/dump"
        document = self._get_json(path, params=params)
        entries = document.get("Suppressions") if isinstance(document, dict) else None
        if not isinstance(entries, list):
            raise ProviderError("Postmark's suppression list was not a Suppressions array")
        return [entry for entry in entries if isinstance(entry, dict)]

    # Webhooks

    def verify_webhook(self, headers: Mapping[str, str], body: bytes, now: float) -> WebhookVerdict:
        """Check the HTTP Basic credentials Postmark sends from the webhook URL, in constant time.

        Postmark signs nothing and gives no timestamp: the same body posted again within
        REPLAY_SECONDS (longer than Postmark's retries) is a replay; events are stored once each.
        """
        if not self._webhook_username or not self._webhook_password:
            return WebhookVerdict(False)
        header = headers.get("Authorization") or ""
        auth = Authorization.from_header(header) if len(header) < 4096 else None
        username = (auth.username or "") if auth is not None and auth.type == "basic" else ""
        password = (auth.password or "") if auth is not None and auth.type == "basic" else ""
        # Both compared, whatever the first gives, so the time says nothing about either.
        user_ok = hmac.compare_digest(username.encode(), self._webhook_username.encode())
        password_ok = hmac.compare_digest(password.encode(), self._webhook_password.encode())
        return WebhookVerdict(
            user_ok and password_ok, "body:" + hashlib.sha256(body).hexdigest(), REPLAY_SECONDS
        )

    def parse_webhook(self, body: bytes) -> list[ProviderEvent]:
        """Parse one Postmark webhook body (one JSON object); ValueError when it is malformed."""
        return parse_webhook_event(body)

    # HTTP plumbing for everything but sending

    def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """Make one request; raise _RequestFailed when there is no answer, a 401 or a 429."""
        try:
            response = self._client.request(method, url, **kwargs)
        except httpx.RequestError as error:
            raise _RequestFailed(f"no answer from Postmark ({type(error).__name__}: {error})") from error
        if response.status_code == 429:
            raise _RequestFailed(
                f"Postmark rate limit: {_error_text(response)}", 429, retry_after=_retry_after(response)
            )
        return response

    def _get_json(self, url: str, **kwargs: Any) -> Any:
        """GET a JSON document; raise _RequestFailed unless the answer is 200 with JSON."""
        response = self._request("GET", url, **kwargs)
        if response.status_code != 200:
            raise _RequestFailed(
                f"Postmark answered HTTP {response.status_code}: {_error_text(response)}",
                response.status_code,
            )
        document = _json_or_none(response)
        if document is None:
            raise _RequestFailed("Postmark answered with invalid JSON", response.status_code)
        return document


def _not_sent_after(failure: SendResult) -> SendResult:
    """The result of a message left unsent because an earlier request of its batch failed."""
    error = f"not sent: {failure.error}"
    if failure.outcome in ("rate_limited", "unauthorized"):
        return SendResult(failure.outcome, error=error, retry_after=failure.retry_after)
    return SendResult("not_sent", error=error, retry_after=FAILED_REQUEST_WAIT)


def _quoted(name: str) -> str:
    """Escape a display name for a quoted string (Postmark takes "Name <addr>")."""
    return name.replace("\\", "\\\\").replace('"', '\\"').replace("\r", " ").replace("\n", " ")


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return intake_text.loads(response.content)
    except ValueError:
        return None


def _postmark_error(code: Any, text: str) -> str:
    """Keep Postmark's own words, with its ErrorCode (which is not an HTTP status)."""
    return f"{text} (Postmark ErrorCode {code})" if text else f"Postmark ErrorCode {code}"


def _error_text(response: httpx.Response) -> str:
    """Return Postmark's {ErrorCode, Message}, or the raw text."""
    document = _json_or_none(response)
    if isinstance(document, dict) and (document.get("Message") or document.get("ErrorCode") is not None):
        return _postmark_error(document.get("ErrorCode"), _text(document.get("Message")) or "")
    return intake_text.storable(f"HTTP {response.status_code}: {response.text[:500]}".strip())


def _retry_after(response: httpx.Response) -> float:
    """Seconds to wait after a 429: a Retry-After if Postmark ever sends one, else a minute."""
    value = response.headers.get("Retry-After", "").strip()
    if value.isdigit() and len(value) < 7:
        return max(1.0, float(value))
    return DEFAULT_RETRY_AFTER


def _text(value: Any) -> str | None:
    """Return a non-empty string, else None."""
    return value if isinstance(value, str) and value else None


def inactive_addresses(message: str) -> list[str]:
    """Return the addresses a 406 answer names ("Found inactive addresses: a@x, b@y.")."""
    match = _INACTIVE.search(message or "")
    if not match:
        return []
    return [address.strip().lower() for address in match.group(1).split(",") if address.strip()]


def parse_time(value: Any) -> datetime:
    """Parse Postmark's ISO 8601 times (7 fractional digits, Z or an offset) as aware UTC.

    Raises ValueError for anything else. A time without a zone is taken as UTC.
    """
    if not isinstance(value, str) or len(value) > 40:
        raise ValueError(f"{value!r} is not a time")
    match = _TIME.fullmatch(value.strip())
    if not match:
        raise ValueError(f"{value!r} is not an ISO 8601 time")
    clock = match["time"] if match["time"].count(":") == 2 else match["time"] + ":00"
    microseconds = int((match["fraction"] or "0")[:6].ljust(6, "0"))
    parsed = datetime.fromisoformat(f"{match['date']}T{clock}").replace(microsecond=microseconds)
    zone = match["zone"]
    if zone and zone != "Z":
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        offset = timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
        if offset >= timedelta(hours=24):
            raise ValueError(f"{value!r} has an impossible offset")
        parsed = parsed.replace(tzinfo=timezone(sign * offset))
    else:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # 9999-12-31T23:00-05:00 is past datetime's last year in UTC
        raise ValueError(f"{value!r} is out of range") from None


def _optional_time(value: Any) -> datetime | None:
    try:
        return parse_time(value)
    except ValueError:
        return None


def _detail_events(detail: dict[str, Any], ref: PollRef) -> Iterator[ProviderEvent]:
    """Turn one message's details (Status and MessageEvents) into ProviderEvents."""
    message_id = _text(detail.get("MessageID")) or ref.provider_message_id
    received = _optional_time(detail.get("ReceivedAt"))
    if received is not None and detail.get("Status") in ACCEPTED_STATUSES:
        # Postmark sends no "processed" webhook: its record of the message is the proof.
        yield ProviderEvent(
            "processed",
            received,
            app_message_id=ref.app_message_id,
            provider_message_id=message_id,
            raw={"Status": detail.get("Status"), "ReceivedAt": detail.get("ReceivedAt")},
        )
    for raw in detail.get("MessageEvents") or []:
        if not isinstance(raw, dict):
            continue
        occurred_at = _optional_time(raw.get("ReceivedAt"))
        if occurred_at is None:
            continue
        kind = MESSAGE_EVENT_KINDS.get(str(raw.get("Type")), "unknown")
        details = raw.get("Details") if isinstance(raw.get("Details"), dict) else {}
        if kind in ("delivered", "deferred"):
            reason = _text(details.get("DeliveryMessage"))
        else:
            reason = _text(details.get("Summary"))
        yield ProviderEvent(
            kind=kind,
            occurred_at=occurred_at,
            app_message_id=ref.app_message_id,
            provider_message_id=message_id,
            recipient=_text(raw.get("Recipient")),
            reason=reason,
            url=_text(details.get("Link")) if kind == "click" else None,
            reject_reason="other" if kind == "bounce" else None,
            raw=raw,
        )


def _with_bounce_type(event: ProviderEvent, record: dict[str, Any]) -> ProviderEvent:
    """Re-read a polled "Bounced" event with its bounce record's Type (the event's time is kept,
    so it deduplicates against the webhook's copy)."""
    try:
        routed = _bounce_event(
            "Bounce",
            record,
            {
                "app_message_id": event.app_message_id,
                "provider_message_id": event.provider_message_id,
                "raw": event.raw,
            },
        )
    except ValueError:
        return event  # a record we cannot read: it stays a bounce
    if routed is None:
        return event
    return ProviderEvent(
        routed.kind,
        event.occurred_at,
        app_message_id=event.app_message_id,
        provider_message_id=event.provider_message_id,
        recipient=event.recipient,
        reason=routed.reason,
        reject_reason=routed.reject_reason,
        raw=event.raw,
    )


# Webhooks


def parse_webhook_event(body: bytes) -> list[ProviderEvent]:
    """Parse one webhook POST (one JSON object) into at most one event; ValueError if malformed.

    An informational record we cannot place (no message, or no time) gives no event.
    """
    if len(body) > MAX_WEBHOOK_BYTES:
        raise ValueError("the webhook body is too large")
    try:
        # What a database would refuse (a NUL, a lone surrogate) comes back as U+FFFD.
        item = intake_text.loads(body)
    except ValueError as error:
        raise ValueError(f"the webhook body is not JSON: {error}") from None
    if not isinstance(item, dict):
        raise ValueError("the webhook body is not a JSON object")
    if _nests_deeper_than(item, MAX_WEBHOOK_DEPTH):
        raise ValueError("the webhook body nests too deeply")
    record_type = item.get("RecordType")
    if not isinstance(record_type, str) or not record_type:
        raise ValueError("the webhook body has no RecordType (an inbound message posted here?)")
    event = _webhook_event(record_type, item)
    return [event] if event is not None else []


def _webhook_event(record_type: str, item: dict[str, Any]) -> ProviderEvent | None:
    """Route one record on RecordType and, for bounces, on Type (never on TypeCode)."""
    metadata = item.get("Metadata")
    app_id = metadata.get(APP_ID_KEY) if isinstance(metadata, dict) else None
    common: dict[str, Any] = {
        "app_message_id": str(app_id) if isinstance(app_id, str | int) and str(app_id) else None,
        "provider_message_id": _text(item.get("MessageID")),
        "raw": item,
    }
    if record_type == "Delivery":
        return ProviderEvent(
            "delivered",
            _required_time(item, "DeliveredAt"),
            recipient=_text(item.get("Recipient")),
            reason=_text(item.get("Details")),
            **common,
        )
    if record_type == "Open":
        return ProviderEvent(
            "open",
            _required_time(item, "ReceivedAt"),
            recipient=_text(item.get("Recipient")),
            reason=_open_summary(item),
            **common,
        )
    if record_type == "Click":
        return ProviderEvent(
            "click",
            _required_time(item, "ReceivedAt"),
            recipient=_text(item.get("Recipient")),
            url=_text(item.get("OriginalLink")),
            **common,
        )
    if record_type in ("Bounce", "SpamComplaint"):
        return _bounce_event(record_type, item, common)
    if record_type == "SubscriptionChange":
        return _subscription_event(item, common)
    if record_type == "Inbound":
        raise ValueError("an inbound message was posted to the events webhook")
    # A record type Postmark adds later: kept on the timeline when we can place it.
    occurred_at = _optional_time(item.get("ReceivedAt") or item.get("ChangedAt"))
    if occurred_at is None or not (common["app_message_id"] or common["provider_message_id"]):
        return None
    return ProviderEvent("unknown", occurred_at, reason=f"Postmark {record_type[:40]}", **common)


def _bounce_event(record_type: str, item: dict[str, Any], common: dict[str, Any]) -> ProviderEvent | None:
    bounce_type = item.get("Type") if isinstance(item.get("Type"), str) else ""
    if record_type == "SpamComplaint" or bounce_type == "SpamComplaint":
        kind, reject_reason = "spamreport", "spam_report"
    elif bounce_type in DEFERRED_BOUNCES:
        kind, reject_reason = "deferred", None
    elif bounce_type in INFORMATIONAL_BOUNCES:
        kind, reject_reason = INFORMATIONAL_BOUNCES[bounce_type], None
    else:
        # A type Postmark adds later counts as a failure, as "Unknown" does.
        kind, reject_reason = "bounce", FAILED_BOUNCES.get(bounce_type, "other")
    occurred_at = _optional_time(item.get("BouncedAt"))
    if occurred_at is None:
        if kind in ("unsubscribe", "group_resubscribe", "unknown"):
            return None  # e.g. the Unsubscribe record without Email or BouncedAt: nothing to place
        raise ValueError(f"the {bounce_type or record_type} record has no readable BouncedAt")
    # The server's answer, or Postmark's description when the answer is bare ("action: failed").
    reason = best_text(_text(item.get("Details")), _text(item.get("Description")))
    return ProviderEvent(
        kind,
        occurred_at,
        recipient=_text(item.get("Email")),
        reason=reason or _text(item.get("Name")) or (bounce_type or None),
        reject_reason=reject_reason,
        **common,
    )


def _subscription_event(item: dict[str, Any], common: dict[str, Any]) -> ProviderEvent | None:
    """A change to the address's suppression: never a status change (a hard bounce or a spam
    complaint comes with its own Bounce/SpamComplaint record)."""
    if not (common["app_message_id"] or common["provider_message_id"]):
        return None  # a manual suppression or reactivation names no message
    occurred_at = _optional_time(item.get("ChangedAt"))
    if occurred_at is None:
        return None
    reason = item.get("SuppressionReason")
    if item.get("SuppressSending") is False:
        kind, text = "group_resubscribe", "Postmark reactivated the address"
    elif reason == "ManualSuppression" and item.get("Origin") == "Recipient":
        kind, text = "unsubscribe", "The client unsubscribed through Postmark's link"
    else:
        kind, text = "unknown", f"Postmark suppressed the address ({str(reason)[:40]})"
    return ProviderEvent(kind, occurred_at, recipient=_text(item.get("Recipient")), reason=text, **common)


def _required_time(item: dict[str, Any], name: str) -> datetime:
    try:
        return parse_time(item.get(name))
    except ValueError as error:
        raise ValueError(f"the {item.get('RecordType')} record has no readable {name}: {error}") from None


def _open_summary(item: dict[str, Any]) -> str | None:
    """Say where it was opened (Platform, mail client), as Postmark reports it."""
    client = item.get("Client") if isinstance(item.get("Client"), dict) else {}
    parts = [_text(item.get("Platform")), _text(client.get("Name"))]
    first = "first open" if item.get("FirstOpen") is True else None
    words = ", ".join(part for part in (*parts, first) if part)
    return words[:200] or None


def _nests_deeper_than(value: Any, limit: int) -> bool:
    """Return whether JSON arrays and objects nest more than `limit` levels (without recursion)."""
    stack = [(value, 1)] if isinstance(value, dict | list) else []
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        children = node.values() if isinstance(node, dict) else node
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False
