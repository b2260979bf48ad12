"""Provider event webhooks: verify, store, acknowledge; a job applies the batch."""

from __future__ import annotations

import logging

from flask import abort, current_app, request
from sqlalchemy.exc import SQLAlchemyError

from webapp import clock
from webapp.database import rollback_quietly
from webapp.extensions import csrf, limiter
from webapp.providers import get_provider, wire_format
from webapp.queue import enqueue
from webapp.services import clock_skew, webhook_guard, webhooks
from webapp.webhooks import bp

log = logging.getLogger(__name__)


@bp.post("/<provider_name>/events")
@csrf.exempt
@limiter.limit(
    webhook_guard.failure_limit, deduct_when=webhook_guard.was_refused, on_breach=webhook_guard.throttled
)
def provider_events(provider_name: str) -> tuple[str, int]:
    """Accept a batch of delivery events from the configured provider (403 unverified, 400 malformed;
    429 for a source address with too many refused requests).

    The URL names the provider's wire format (/webhooks/sendgrid/events, /webhooks/postmark/events);
    any other name is 404.
    """
    config = current_app.config
    if provider_name != wire_format(config):
        abort(404)
    body = request.get_data(cache=False)  # the exact bytes that were signed
    provider = get_provider(config)
    verdict = provider.verify_webhook(request.headers, body, clock.timestamp())
    if verdict.skew_seconds is not None:
        clock_skew.note_signed_time(verdict.skew_seconds, accepted=verdict.authentic)
    if not verdict.authentic:
        log.warning("%s event webhook: credentials refused from %s", provider_name, request.remote_addr)
        webhook_guard.note_refused(provider_name)
        abort(403)
    try:
        provider.check_webhook(body)
    except ValueError as error:
        log.info("malformed event webhook body: %s", error)
        abort(400)
    # A copy posted again while the provider's proof of it is valid is acknowledged and dropped.
    key = verdict.replay_key
    if key is not None and not webhooks.first_delivery(provider_name, key, verdict.replay_ttl):
        return "", 200
    try:
        batch = webhooks.store_batch(provider_name, body)
    except SQLAlchemyError as error:
        # Not stored: a 5xx makes the provider post it again (a 4xx would make it drop it).
        log.warning("event batch not stored, the provider will retry: %s", error)
        rollback_quietly()  # in a fast shutdown the rollback fails too: still a 503
        if key is not None:
            webhooks.forget_delivery(provider_name, key)
        return "", 503
    enqueue(webhooks.APPLY_JOB, batch.id)
    return "", 200
