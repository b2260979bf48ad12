"""SendGrid's signed event webhook: checking the signature, and reading a batch of events."""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key

from webapp import clock as app_clock
from webapp.event_kinds import EventKind
from webapp.providers.base import ProviderEvent, WebhookVerdict
from webapp.providers.http import read_json
from webapp.providers.sendgrid.translate import (
    APP_ID_ARG,
    DIGITS,
    WEBHOOK_KINDS,
    reject_reason_of,
    text,
    unix_time,
    whole_number,
    x_message_id,
)

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
_MILLISECONDS_FROM = 10**11  # a unix time in seconds stays below this until the year 5138


def verify_webhook(
    key: str, tolerance: int, headers: Mapping[str, str], body: bytes, now: float
) -> WebhookVerdict:
    """Check the ECDSA signature with the public key (base64 DER); a copy is a replay while its
    timestamp is within the tolerance (seconds).

    A correctly signed request says how far the clocks differ (skew_seconds), also when that is
    beyond the tolerance and the request is refused, so an operator can be told why.
    """
    timestamp = headers.get(TIMESTAMP_HEADER, "")
    signature = headers.get(SIGNATURE_HEADER)
    authentic = verify_signature(key, signature, timestamp, body, tolerance_seconds=tolerance, now=now)
    if not authentic:
        # Signed correctly, but at a time too far from ours? (Checked again as if it were then.)
        late = DIGITS.fullmatch(timestamp or "") is not None and abs(now - int(timestamp)) > tolerance
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
    if not public_key_b64 or not signature_b64 or not timestamp or not DIGITS.fullmatch(timestamp):
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


def check_webhook_body(body: bytes) -> int:
    """Check an event webhook body the way parse_webhook_events would, without building the events
    (the route only needs to know it is well-formed); return how many events it holds."""
    items = _webhook_items(body)
    for position, item in enumerate(items):
        _event_name_and_time(item, position)
    return len(items)


def _webhook_items(body: bytes) -> list:
    """Return the JSON array of an event webhook body; ValueError if it is not a flat one."""
    # orjson first (about a third of the standard module's time on a 1,000-event body); what a
    # database would refuse (a NUL, a lone surrogate) comes back as U+FFFD, not as a refusal.
    return read_json(body, what="the event webhook body", shape=list)


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
        seconds = unix_time(item["timestamp"])
        return name, datetime.fromtimestamp(seconds / 1000 if seconds > _MILLISECONDS_FROM else seconds, UTC)
    except (ValueError, OverflowError, OSError) as error:
        raise ValueError(f"event {position} of the webhook body has a bad timestamp: {error}") from None


def _webhook_event(item: Any, position: int) -> ProviderEvent:
    """Turn one webhook event object into a ProviderEvent."""
    name, occurred_at = _event_name_and_time(item, position)
    kind = WEBHOOK_KINDS.get(name, EventKind.OTHER)
    if kind in (EventKind.DEFERRED, EventKind.DELIVERED):
        reason = text(item.get("response")) or text(item.get("reason"))
    else:
        reason = text(item.get("reason"))
    return ProviderEvent(
        kind=kind,
        occurred_at=occurred_at,
        app_message_id=text(item.get(APP_ID_ARG)),
        provider_message_id=x_message_id(item.get("sg_message_id"), item.get("smtp-id")),
        recipient=text(item.get("email")),
        reason=reason,
        url=text(item.get("url")) if kind == EventKind.CLICKED else None,
        attempt=whole_number(item.get("attempt")) if kind == EventKind.DEFERRED else None,
        machine=kind == EventKind.OPENED and _truthy(item.get("sg_machine_open")),
        reject_reason=reject_reason_of(reason) if kind == EventKind.DROPPED else None,
        raw=item,
    )


def _truthy(value: Any) -> bool:
    """Read a JSON flag that may arrive as a boolean or as text."""
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1")
    return value is True or value == 1
