"""Inbound-mail webhooks: each mail to the support address is filed as a spam-list removal case.

One route per provider's inbound webhook (SendGrid's Inbound Parse, Postmark's inbound JSON). Each
checks the provider's credentials, reads the post with the provider's own reader (the contract's
InboundMail) and hands the mail to the same filing; a job proves it later.
"""

from __future__ import annotations

import hmac
import logging
import time

from flask import abort, current_app, request
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.wrappers import Response

from webapp.extensions import csrf, limiter
from webapp.providers import get_provider, inbound_reader, wire_format
from webapp.providers.base import InboundTooLarge
from webapp.services import webhook_guard
from webapp.services.inbound import filing
from webapp.webhooks import bp

log = logging.getLogger(__name__)


@bp.post("/sendgrid/inbound")
@csrf.exempt
@limiter.limit(webhook_guard.failure_limit, deduct_when=lambda response: response.status_code == 401)
def sendgrid_inbound() -> tuple[str, int] | Response:
    """Store a mail sent to support as a removal case, checked later in a job (401 without the secret).

    Any 4xx makes SendGrid drop the mail, so failures worth a retry answer 503. Only refused
    secrets count against a source address (a guesser is answered 429 after a few); SendGrid's own
    posts carry the secret, so its addresses are never held back.
    """
    refusal = _secret_refusal()
    if refusal is not None:
        return refusal
    return _file_post("sendgrid")


@bp.post("/postmark/inbound")
@csrf.exempt
@limiter.limit(webhook_guard.failure_limit, deduct_when=lambda response: response.status_code == 401)
def postmark_inbound() -> tuple[str, int] | Response:
    """Store a mail sent to support as a removal case, checked later in a job (401 without the
    Postmark webhook's credentials; 403 when the app does not use Postmark).

    Postmark retries anything but a 200 or a 403 for about ten hours: credentials set wrong lose
    no mail if they are put right in time.
    """
    config = current_app.config
    if wire_format(config) != "postmark":
        log.error("inbound mail refused: the Postmark inbound webhook needs EMAIL_PROVIDER=postmark")
        return "", 403
    # The same HTTP Basic credentials as Postmark's event webhook (the body plays no part in them).
    if not get_provider(config).verify_webhook(request.headers, b"", time.time()).authentic:
        log.warning("inbound mail refused: wrong Postmark webhook credentials from %s", request.remote_addr)
        return Response("", status=401, headers={"WWW-Authenticate": 'Basic realm="inbound"'})
    return _file_post("postmark")


def _file_post(name: str) -> tuple[str, int]:
    """Read the post with the wire format's reader and file the mail it holds (400, 413 or 503)."""
    max_bytes = current_app.config["INBOUND_MAX_BYTES"]
    request.max_content_length = max_bytes  # this route's own limit, above the app's default
    body = request.get_data(cache=False)
    if len(body) > max_bytes:
        raise RequestEntityTooLarge()
    try:
        mail = inbound_reader(name)(request.headers.get("Content-Type", ""), body)
    except InboundTooLarge as error:
        log.info("inbound post too large: %s", error)
        raise RequestEntityTooLarge() from None
    except ValueError as error:
        log.info("unreadable inbound post: %s", error)
        abort(400)
    if mail.raw is None:
        log.warning("inbound mail without its raw message: %s", mail.raw_hint)
    try:
        filing.file_mail(mail)
    except SQLAlchemyError as error:
        log.warning("inbound mail not filed, the provider will retry: %s", error)
        return "", 503
    return "", 200


def _secret_refusal() -> Response | None:
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
