"""SendGrid's words and values in ours: event names, drop reasons, errors, request ids, times.

The same real event can reach us twice: pushed by the event webhook and pulled by polling the
Email Activity API. The two name events differently and carry different fields, so both paths
build ProviderEvents from the same few fields (our app_message_id, kind, whole-second time, url,
attempt) read here, and the events deduplicate against each other.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import httpx

from webapp import intake_text
from webapp.event_kinds import EventKind
from webapp.providers.base import RejectReason

# The custom arg that carries our own id to SendGrid and back in every event.
APP_ID_ARG = "app_message_id"

# Email Activity event names -> our event kinds (any other name is EventKind.OTHER).
POLLED_KINDS: dict[str, EventKind] = {
    "processed": EventKind.PROCESSED,
    "delivered": EventKind.DELIVERED,
    "deferred": EventKind.DEFERRED,
    "dropped": EventKind.DROPPED,
    "bounced": EventKind.BOUNCED,
    "opened": EventKind.OPENED,
    "clicked": EventKind.CLICKED,
    "spam_report": EventKind.REPORTED_AS_SPAM,
    "unsubscribe": EventKind.UNSUBSCRIBED,
    "group_unsubscribe": EventKind.UNSUBSCRIBED_FROM_GROUP,
    "group_resubscribe": EventKind.RESUBSCRIBED,
}

# Event webhook names -> our event kinds: the webhook spells several differently from Email
# Activity (any other name is EventKind.OTHER).
WEBHOOK_KINDS: dict[str, EventKind] = {
    "processed": EventKind.PROCESSED,
    "delivered": EventKind.DELIVERED,
    "deferred": EventKind.DEFERRED,
    "bounce": EventKind.BOUNCED,
    "dropped": EventKind.DROPPED,
    "open": EventKind.OPENED,
    "click": EventKind.CLICKED,
    "spamreport": EventKind.REPORTED_AS_SPAM,
    "unsubscribe": EventKind.UNSUBSCRIBED,
    "group_unsubscribe": EventKind.UNSUBSCRIBED_FROM_GROUP,
    "group_resubscribe": EventKind.RESUBSCRIBED,
}

# SendGrid's drop reasons (lower-cased) -> ours; any other text is "other", kept as SendGrid wrote it.
DROP_REASONS: dict[str, RejectReason] = {
    "spam reporting address": "spam_report",
    "bounced address": "bounced_address",
    "invalid": "invalid_address",
    "invalid address": "invalid_address",
    "unsubscribed address": "unsubscribed",
    "unsubscribed group": "unsubscribed",
}

DIGITS = re.compile(r"[0-9]{1,15}")
# A host name of SendGrid's mail servers, as a dot-separated part of an sg_message_id: the current
# format is "<X-Message-Id>.<filter host>...", older ones start with the host and name no request.
_SERVER_HOST = re.compile(r"(?:filter|ismtpd|smtpd|recvd|geopod)[A-Za-z0-9-]*[0-9][A-Za-z0-9-]*")
# The webhook's smtp-id, "<X-Message-Id@ismtpd...>", when SendGrid's own MTA made the Message-ID
# (a Message-ID the sender chose names no request).
_SMTP_ID = re.compile(r"<([A-Za-z0-9_.=+-]{1,100})@ismtpd[A-Za-z0-9.-]*>")
_MESSAGE_ID_CHARS = re.compile(r"[A-Za-z0-9_.=+-]{1,100}")


def reject_reason_of(reason: str | None) -> RejectReason:
    """Say in our words why SendGrid dropped an email, from its drop reason."""
    return DROP_REASONS.get((reason or "").strip().lower(), "other")


def error_text(response: httpx.Response) -> str:
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


def iso_time(value: Any) -> datetime | None:
    """Parse an ISO 8601 time as an aware UTC datetime (naive times are UTC)."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def text(value: Any) -> str | None:
    """Return a non-empty string, else None."""
    return value if isinstance(value, str) and value else None


def whole_number(value: Any) -> int | None:
    """Return an int from an int or a digit string (the webhook sends `attempt` as a string)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and DIGITS.fullmatch(value.strip()):
        return int(value)
    return None


def unix_time(value: Any) -> float:
    """Return a unix time given as a number or a digit string; raise ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError("a boolean is not a time")
    if isinstance(value, str) and DIGITS.fullmatch(value.strip()):
        return float(value)
    if isinstance(value, int | float) and math.isfinite(value) and value >= 0:
        return float(value)
    raise ValueError(f"{value!r} is not a unix time")
