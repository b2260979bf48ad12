"""Postmark's webhooks: checking their Basic credentials, and reading the one event each carries.

Postmark signs nothing: the webhook URL carries HTTP Basic credentials, and each POST carries one
event, routed on RecordType and, for bounces, on Type.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from werkzeug.datastructures import Authorization

from webapp.event_kinds import EventKind
from webapp.providers.base import ProviderEvent, WebhookVerdict
from webapp.providers.http import read_json
from webapp.providers.postmark.translate import APP_ID_KEY, bounce_event, optional_time, parse_time, text

# A webhook carries one event; real ones are a few kilobytes (a bounce may include content).
MAX_WEBHOOK_BYTES = 1024 * 1024
# A webhook body seen again this soon is a replay (Postmark retries for up to about 10.5 hours).
REPLAY_SECONDS = 24 * 60 * 60


def verify_webhook(username: str, password: str, headers: Mapping[str, str], body: bytes) -> WebhookVerdict:
    """Check the HTTP Basic credentials Postmark sends from the webhook URL, in constant time.

    Postmark signs nothing and gives no timestamp: the same body posted again within
    REPLAY_SECONDS (longer than Postmark's retries) is a replay; events are stored once each.
    """
    if not username or not password:
        return WebhookVerdict(False)
    header = headers.get("Authorization") or ""
    auth = Authorization.from_header(header) if len(header) < 4096 else None
    given_username = (auth.username or "") if auth is not None and auth.type == "basic" else ""
    given_password = (auth.password or "") if auth is not None and auth.type == "basic" else ""
    # Both compared, whatever the first gives, so the time says nothing about either.
    user_ok = hmac.compare_digest(given_username.encode(), username.encode())
    password_ok = hmac.compare_digest(given_password.encode(), password.encode())
    return WebhookVerdict(user_ok and password_ok, "body:" + hashlib.sha256(body).hexdigest(), REPLAY_SECONDS)


def parse_webhook_event(body: bytes) -> list[ProviderEvent]:
    """Parse one webhook POST (one JSON object) into at most one event; ValueError if malformed.

    An informational record we cannot place (no message, or no time) gives no event.
    """
    # What a database would refuse (a NUL, a lone surrogate) comes back as U+FFFD.
    item = read_json(body, what="the webhook body", shape=dict, max_bytes=MAX_WEBHOOK_BYTES)
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
        "provider_message_id": text(item.get("MessageID")),
        "raw": item,
    }
    if record_type == "Delivery":
        return ProviderEvent(
            EventKind.DELIVERED,
            _required_time(item, "DeliveredAt"),
            recipient=text(item.get("Recipient")),
            reason=text(item.get("Details")),
            **common,
        )
    if record_type == "Open":
        return ProviderEvent(
            EventKind.OPENED,
            _required_time(item, "ReceivedAt"),
            recipient=text(item.get("Recipient")),
            reason=_open_summary(item),
            **common,
        )
    if record_type == "Click":
        return ProviderEvent(
            EventKind.CLICKED,
            _required_time(item, "ReceivedAt"),
            recipient=text(item.get("Recipient")),
            url=text(item.get("OriginalLink")),
            **common,
        )
    if record_type in ("Bounce", "SpamComplaint"):
        return bounce_event(record_type, item, common)
    if record_type == "SubscriptionChange":
        return _subscription_event(item, common)
    if record_type == "Inbound":
        raise ValueError("an inbound message was posted to the events webhook")
    # A record type Postmark adds later: kept on the timeline when we can place it.
    occurred_at = optional_time(item.get("ReceivedAt") or item.get("ChangedAt"))
    if occurred_at is None or not (common["app_message_id"] or common["provider_message_id"]):
        return None
    return ProviderEvent(EventKind.OTHER, occurred_at, reason=f"Postmark {record_type[:40]}", **common)


def _subscription_event(item: dict[str, Any], common: dict[str, Any]) -> ProviderEvent | None:
    """A change to the address's suppression: never a status change (a hard bounce or a spam
    complaint comes with its own Bounce/SpamComplaint record)."""
    if not (common["app_message_id"] or common["provider_message_id"]):
        return None  # a manual suppression or reactivation names no message
    occurred_at = optional_time(item.get("ChangedAt"))
    if occurred_at is None:
        return None
    reason = item.get("SuppressionReason")
    if item.get("SuppressSending") is False:
        kind, words = EventKind.RESUBSCRIBED, "Postmark reactivated the address"
    elif reason == "ManualSuppression" and item.get("Origin") == "Recipient":
        kind, words = EventKind.UNSUBSCRIBED, "The client unsubscribed through Postmark's link"
    else:
        kind, words = EventKind.OTHER, f"Postmark suppressed the address ({str(reason)[:40]})"
    return ProviderEvent(kind, occurred_at, recipient=text(item.get("Recipient")), reason=words, **common)


def _required_time(item: dict[str, Any], name: str) -> datetime:
    try:
        return parse_time(item.get(name))
    except ValueError as error:
        raise ValueError(f"the {item.get('RecordType')} record has no readable {name}: {error}") from None


def _open_summary(item: dict[str, Any]) -> str | None:
    """Say where it was opened (Platform, mail client), as Postmark reports it."""
    client = item.get("Client") if isinstance(item.get("Client"), dict) else {}
    parts = [text(item.get("Platform")), text(client.get("Name"))]
    first = "first open" if item.get("FirstOpen") is True else None
    words = ", ".join(part for part in (*parts, first) if part)
    return words[:200] or None
