"""SendGrid's event webhook: verify, store, acknowledge; a job applies the batch."""

from __future__ import annotations

import logging

from flask import abort, current_app, request

from webapp.extensions import csrf, limiter
from webapp.providers import get_sandbox
from webapp.providers.sendgrid import parse_webhook_events, verify_signature
from webapp.queue import enqueue
from webapp.services import webhooks
from webapp.webhooks import bp

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"


@bp.post("/sendgrid/events")
@csrf.exempt
@limiter.exempt
def sendgrid_events() -> tuple[str, int]:
    """Accept a signed batch of delivery events (403 unsigned, 400 malformed)."""
    body = request.get_data(cache=False)  # the exact bytes that were signed
    if not verify_signature(
        _webhook_public_key(),
        request.headers.get(SIGNATURE_HEADER),
        request.headers.get(TIMESTAMP_HEADER),
        body,
        tolerance_seconds=current_app.config["WEBHOOK_TOLERANCE_SECONDS"],
    ):
        abort(403)
    try:
        parse_webhook_events(body)
    except ValueError as error:
        log.info("malformed event webhook body: %s", error)
        abort(400)
    batch = webhooks.store_batch("sendgrid", body)
    enqueue(webhooks.APPLY_JOB, batch.id)
    return "", 200


def _webhook_public_key() -> str:
    """Return the key that signs our events; the sandbox signs with a key of its own."""
    config = current_app.config
    if config["SENDGRID_WEBHOOK_PUBLIC_KEY"]:
        return config["SENDGRID_WEBHOOK_PUBLIC_KEY"]
    if config["EMAIL_PROVIDER"] == "sandbox":
        return get_sandbox(config).public_key_b64
    return ""
