"""Provider webhooks. Events: verify, store, acknowledge; a job applies the batch.
Inbound Parse (SendGrid's): mail to the support address, filed as spam-list removal cases."""

from __future__ import annotations

import hmac
import logging
import time

from flask import abort, current_app, request
from flask_limiter import RequestLimit
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.wrappers import Response

from webapp.extensions import csrf, db, limiter
from webapp.providers import get_provider, wire_format
from webapp.queue import enqueue
from webapp.services import inbound, webhook_guard, webhooks
from webapp.webhooks import bp
from webapp.webhooks.forms import multipart_fields

log = logging.getLogger(__name__)


def _throttled(limit: RequestLimit) -> None:
    """A source past its limit is refused (429) without a check: count it towards a burst too."""
    webhook_guard.note_refused((request.view_args or {}).get("provider_name", ""))


@bp.post("/<provider_name>/events")
@csrf.exempt
@limiter.limit(webhook_guard.failure_limit, deduct_when=webhook_guard.was_refused, on_breach=_throttled)
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
    verdict = provider.verify_webhook(request.headers, body, time.time())
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
        db.session.rollback()
        if key is not None:
            webhooks.forget_delivery(provider_name, key)
        return "", 503
    enqueue(webhooks.APPLY_JOB, batch.id)
    return "", 200


@bp.post("/sendgrid/inbound")
@csrf.exempt
@limiter.exempt
def sendgrid_inbound() -> tuple[str, int] | Response:
    """Store a mail sent to support as a removal case, checked later in a job (401 without the secret).

    Any 4xx makes SendGrid drop the mail, so failures worth a retry answer 503.
    """
    refusal = _inbound_refusal()
    if refusal is not None:
        return refusal
    try:
        fields = multipart_fields(request, current_app.config["INBOUND_MAX_BYTES"])
    except ValueError as error:
        log.info("unreadable inbound post: %s", error)
        abort(400)
    try:
        if fields.get("email", b"").strip():
            inbound.file_mail(
                fields["email"],
                receiver_dkim=_field_text(fields, "dkim"),
                spf=_field_text(fields, "SPF"),
            )
        elif fields.get("from") or fields.get("text") or fields.get("headers"):
            log.warning("inbound mail without the raw MIME: enable 'POST the raw, full MIME message'")
            inbound.file_parsed_mail({name: _field_text(fields, name) for name in PARSED_FIELDS})
        else:
            abort(400)
    except SQLAlchemyError as error:
        log.warning("inbound mail not filed, SendGrid will retry: %s", error)
        return "", 503
    return "", 200


PARSED_FIELDS = ("from", "to", "subject", "text", "headers", "dkim", "SPF")


def _field_text(fields: dict[str, bytes], name: str) -> str:
    return fields.get(name, b"")[:200_000].decode("utf-8", "replace")


def _inbound_refusal() -> Response | None:
    """Return the answer to a request without the shared secret, or None when it has it."""
    config = current_app.config
    secret = config["INBOUND_WEBHOOK_SECRET"]
    if not secret:
        # Closed by default; only the sandbox demo may run without a secret.
        if config["EMAIL_PROVIDER"] == "sandbox":
            return None
        log.error("inbound mail refused: set INBOUND_WEBHOOK_SECRET to accept removal requests")
        return Response("", status=403)
    auth = request.authorization
    password = (auth.password or "") if auth is not None and auth.type == "basic" else ""
    if not hmac.compare_digest(password.encode(), secret.encode()):
        log.warning("inbound mail refused: missing or wrong INBOUND_WEBHOOK_SECRET")
        return Response("", status=401, headers={"WWW-Authenticate": 'Basic realm="inbound"'})
    return None
