"""Event webhook requests refused for their credentials: slowed per source, and a burst alerts.

Each source address has WEBHOOK_FAILURE_RATE_LIMIT refusals (Flask-Limiter, on the route); past
it, that address is answered 429 without a look at its credentials, which a real provider retries
later. Refusals from all sources together are counted here: WEBHOOK_FAILURE_ALERT_COUNT of them
within ALERT_WINDOW_SECONDS alert the operators once, whether a guesser is at work or the
provider's own credentials are set wrong (then every event is being refused).
"""

from __future__ import annotations

import logging

from flask import current_app, request
from flask_limiter import RequestLimit
from redis.exceptions import RedisError

from webapp import clock
from webapp.extensions import db

log = logging.getLogger(__name__)

ALERT_KIND = "webhook_credentials_refused"
ALERT_WINDOW_SECONDS = 10 * 60


def failure_limit() -> str:
    """The refusals one source address may have (Flask-Limiter's notation)."""
    return current_app.config["WEBHOOK_FAILURE_RATE_LIMIT"]


def was_refused(response: object) -> bool:
    """Whether the webhook refused the request's credentials (only those count against a source)."""
    return getattr(response, "status_code", 0) == 403


def throttled(limit: RequestLimit) -> None:
    """A source past its limit is refused (429) without a check: count it towards a burst too."""
    note_refused((request.view_args or {}).get("provider_name", ""))


def note_refused(provider: str) -> None:
    """Count one refusal; alert the operators when the refusals of the window reach the count."""
    window = int(clock.timestamp() // ALERT_WINDOW_SECONDS)
    key = f"webhook-refused:{provider}:{window}"
    try:
        redis = current_app.extensions["redis"]
        with redis.pipeline() as pipe:
            pipe.incr(key)
            pipe.expire(key, 2 * ALERT_WINDOW_SECONDS)
            count = pipe.execute()[0]
    except RedisError as error:
        log.warning("webhook refusals not counted: %s", error)
        return
    if count != current_app.config["WEBHOOK_FAILURE_ALERT_COUNT"]:
        return
    from webapp.services.alerts import alert_operators

    alert_operators(
        ALERT_KIND,
        f"The {provider} event webhook refused {count} requests for wrong credentials within "
        f"{ALERT_WINDOW_SECONDS // 60} minutes. Someone may be guessing them, or the provider's "
        "settings no longer match ours (then its events are being lost): check the webhook's "
        "credentials in the provider's settings and in ours, and the web server's log for the sources.",
    )
    db.session.commit()
