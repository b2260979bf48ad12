"""SendGrid's Event Webhook, simulated: events rendered in its shape, batched and signed as it signs."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from webapp.event_kinds import EventKind
from webapp.sandbox import tracking
from webapp.sandbox.base import Pending, PostedKeys
from webapp.sandbox.scenarios import CLIENT_IP, SANDBOX_IP, USER_AGENT, Visible
from webapp.sandbox.store import SimMessage, Store

WEBHOOK_BATCH_SIZE = 500
SIGNING_KEY = "private_key"  # its meta key in the state file
# Step kinds -> the event webhook's names for them.
WEBHOOK_NAMES: dict[EventKind, str] = {
    EventKind.PROCESSED: "processed",
    EventKind.DELIVERED: "delivered",
    EventKind.DEFERRED: "deferred",
    EventKind.DROPPED: "dropped",
    EventKind.BOUNCED: "bounce",
    EventKind.OPENED: "open",
    EventKind.CLICKED: "click",
    EventKind.REPORTED_AS_SPAM: "spamreport",
}
# Steps SendGrid reports nothing for: the receiving server's later "filed as spam" notice.
UNREPORTED = frozenset({EventKind.FILED_AS_SPAM})
# Why SendGrid drops a message, in its own words (the `reason` of a dropped event).
DROP_TEXT = {
    "bounced_address": "Bounced Address",
    "spam_report": "Spam Reporting Address",
    "invalid_address": "Invalid",
    "unsubscribed": "Unsubscribed Address",
}


class SigningKey:
    """The P-256 key pair that signs the sandbox's webhooks, kept in the state file."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._key: ec.EllipticCurvePrivateKey | None = None

    def private(self) -> ec.EllipticCurvePrivateKey:
        """Load (or make, once for every process) the private key."""
        if self._key is None:
            pem = self.store.meta(SIGNING_KEY, make=_new_pem)
            key = serialization.load_pem_private_key(pem.encode(), password=None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise TypeError(f"the sandbox state file {self.store.path} holds a key that is not ECDSA")
            self._key = key
        return self._key

    def public_b64(self) -> str:
        """The verification key: base64 DER SubjectPublicKeyInfo, as SendGrid shows it."""
        der = (
            self.private()
            .public_key()
            .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        )
        return base64.b64encode(der).decode()

    def headers(self, body: bytes, now: float) -> dict[str, str]:
        """Sign timestamp + body, in SendGrid's headers."""
        timestamp = str(int(now))
        signature = self.private().sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        return {
            "Content-Type": "application/json",
            "User-Agent": "SendGrid Event API",
            "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
        }


def _new_pem() -> str:
    return (
        ec.generate_private_key(ec.SECP256R1())
        .private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        .decode()
    )


def batches(
    pending: list[Pending], key: SigningKey, now: float
) -> Iterator[tuple[bytes, dict[str, str], PostedKeys]]:
    """Signed batches of up to WEBHOOK_BATCH_SIZE events, oldest first. A step SendGrid reports
    nothing for goes in no body but is marked done with its batch; a batch of only such steps comes
    with an empty body (the simulator marks it done without a request)."""
    for start in range(0, len(pending), WEBHOOK_BATCH_SIZE):
        batch = pending[start : start + WEBHOOK_BATCH_SIZE]
        keys = [(item.message.msg_id, item.event.index) for item in batch]
        events = [
            webhook_event(item.message, item.event)
            for item in batch
            if item.event.step.event not in UNREPORTED
        ]
        if not events:
            yield b"", {}, keys
            continue
        # SendGrid's bodies end with CRLF, and the signature covers it.
        body = (json.dumps(events) + "\r\n").encode()
        yield body, key.headers(body, now), keys


def webhook_event(message: SimMessage, event: Visible) -> dict[str, Any]:
    """One event as the event webhook posts it, custom args flattened to top-level keys."""
    step = event.step
    fields: dict[str, Any] = {
        "email": message.to_email,
        "timestamp": event.at,
        "event": WEBHOOK_NAMES[step.event],
        "sg_event_id": event_id(message.msg_id, event.index),
        "sg_message_id": message.msg_id,
        "smtp-id": f"<{message.request_id}@ismtpd-sandbox.sendgrid.invalid>",
    }
    if message.categories:
        fields["category"] = list(message.categories)
    if step.event == EventKind.DELIVERED:
        fields.update(response="250 2.0.0 OK", ip=SANDBOX_IP, tls=1)
    elif step.event == EventKind.DEFERRED:
        fields.update(attempt=str(step.attempt), response=step.reason, ip=SANDBOX_IP)
    elif step.event == EventKind.BOUNCED:
        fields.update(
            reason=step.reason, status="5.1.1", type="bounce", bounce_classification="Invalid Address"
        )
    elif step.event == EventKind.DROPPED:
        fields.update(reason=DROP_TEXT.get(step.reject or "", "Invalid"), status="5.0.0")
    elif step.event == EventKind.OPENED:
        fields.update(sg_machine_open=step.machine, useragent=USER_AGENT, ip=CLIENT_IP)
    elif step.event == EventKind.CLICKED:
        part = "html" if tracking.in_html(message.html, step.url or "") else "text"
        fields.update(url=step.url, url_offset={"index": 0, "type": part}, useragent=USER_AGENT, ip=CLIENT_IP)
    # As at SendGrid, a custom arg named like a reserved key loses to it.
    return {**message.custom_args, **fields}


def event_id(msg_id: str, index: int) -> str:
    """A stable sg_event_id: a redelivered event keeps its id, as SendGrid's retries do."""
    return (
        base64.urlsafe_b64encode(hashlib.sha256(f"{msg_id}#{index}".encode()).digest()).decode().rstrip("=")
    )
