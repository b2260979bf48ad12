"""Postmark's words and values in ours: bounce types, times, errors.

A bounce record reaches us both ways: posted to the webhook, and fetched by polling when a
message's events say only "Bounced". Both read it with bounce_event, so the two copies agree.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx

from webapp import intake_text
from webapp.bounce_reasons import best_text
from webapp.event_kinds import EventKind
from webapp.providers.base import ProviderEvent, RejectReason
from webapp.providers.http import json_or_none

# The Metadata key that carries our own id to Postmark and back (keys may have 20 characters).
APP_ID_KEY = "app_message_id"

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
INFORMATIONAL_BOUNCES: dict[str, EventKind] = {
    "SpamNotification": EventKind.FILED_AS_SPAM,
    "Unsubscribe": EventKind.UNSUBSCRIBED,
    "Subscribe": EventKind.RESUBSCRIBED,
    "AutoResponder": EventKind.OTHER,
    "AddressChange": EventKind.OTHER,
    "ChallengeVerification": EventKind.OTHER,
    "OpenRelayTest": EventKind.OTHER,
}

_TIME = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})[T ](?P<time>\d{2}:\d{2}(?::\d{2})?)(?:\.(?P<fraction>\d{1,9}))?"
    r"(?P<zone>Z|[+-]\d{2}:?\d{2})?"
)


def bounce_event(record_type: str, item: dict[str, Any], common: dict[str, Any]) -> ProviderEvent | None:
    """Read a Bounce or SpamComplaint record on its Type; None for an informational record we
    cannot place; ValueError for a failure without a readable time."""
    bounce_type = item.get("Type") if isinstance(item.get("Type"), str) else ""
    reject_reason: RejectReason | None = None
    if record_type == "SpamComplaint" or bounce_type == "SpamComplaint":
        kind, reject_reason = EventKind.REPORTED_AS_SPAM, "spam_report"
    elif bounce_type in DEFERRED_BOUNCES:
        kind = EventKind.DEFERRED
    elif bounce_type in INFORMATIONAL_BOUNCES:
        kind = INFORMATIONAL_BOUNCES[bounce_type]
    else:
        # A type Postmark adds later counts as a failure, as "Unknown" does.
        kind, reject_reason = EventKind.BOUNCED, FAILED_BOUNCES.get(bounce_type, "other")
    occurred_at = optional_time(item.get("BouncedAt"))
    if occurred_at is None:
        if kind in (EventKind.UNSUBSCRIBED, EventKind.RESUBSCRIBED, EventKind.OTHER):
            return None  # e.g. the Unsubscribe record without Email or BouncedAt: nothing to place
        raise ValueError(f"the {bounce_type or record_type} record has no readable BouncedAt")
    # The server's answer, or Postmark's description when the answer is bare ("action: failed").
    reason = best_text(text(item.get("Details")), text(item.get("Description")))
    return ProviderEvent(
        kind,
        occurred_at,
        recipient=text(item.get("Email")),
        reason=reason or text(item.get("Name")) or (bounce_type or None),
        reject_reason=reject_reason,
        **common,
    )


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


def optional_time(value: Any) -> datetime | None:
    """Parse a Postmark time, or None when it is not one."""
    try:
        return parse_time(value)
    except ValueError:
        return None


def text(value: Any) -> str | None:
    """Return a non-empty string, else None."""
    return value if isinstance(value, str) and value else None


def postmark_error(code: Any, words: str) -> str:
    """Keep Postmark's own words, with its ErrorCode (which is not an HTTP status)."""
    return f"{words} (Postmark ErrorCode {code})" if words else f"Postmark ErrorCode {code}"


def error_text(response: httpx.Response) -> str:
    """Return Postmark's {ErrorCode, Message}, or the raw text (storable)."""
    document = json_or_none(response)
    if isinstance(document, dict) and (document.get("Message") or document.get("ErrorCode") is not None):
        return postmark_error(document.get("ErrorCode"), text(document.get("Message")) or "")
    return intake_text.storable(f"HTTP {response.status_code}: {response.text[:500]}".strip())
