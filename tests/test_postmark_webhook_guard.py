"""Postmark's event webhook against a guesser: wrong credentials are throttled per source address,
a burst of them alerts the operators, and an event posted again is acknowledged and dropped, as
SendGrid's replays are (tests/test_webhook_replay.py). SendGrid's inbound route throttles wrong
secrets the same way. Real Redis (the limiter's and the app's)."""

from __future__ import annotations

import base64
import json
import secrets
from pathlib import Path

import pytest
import sqlalchemy as sa

from webapp.extensions import db
from webapp.models import OperatorAlert, WebhookBatch
from webapp.redis_keys import redis_key
from webapp.services import webhook_guard

URL = "/webhooks/postmark/events"
FIXTURES = Path(__file__).parent / "fixtures" / "postmark"
USER = "postmark-hook"
PASSWORD = secrets.token_urlsafe(32)


def credentials(password: str = PASSWORD, user: str = USER) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}", "Content-Type": "application/json"}


def event(name: str = "webhook_delivery.json") -> bytes:
    return json.dumps(json.loads((FIXTURES / name).read_text())).encode()


@pytest.fixture
def postmark(make_app):
    """The app on Postmark, its webhook credentials set, limits on (5 refusals a source, alert at 3)."""
    app = make_app(
        EMAIL_PROVIDER="postmark",
        POSTMARK_SERVER_TOKEN="server-token",
        POSTMARK_WEBHOOK_USERNAME=USER,
        POSTMARK_WEBHOOK_PASSWORD=PASSWORD,
        RATELIMIT_ENABLED=True,
        WEBHOOK_FAILURE_RATE_LIMIT="5 per 10 minutes",
        WEBHOOK_FAILURE_ALERT_COUNT=3,
    )
    with app.app_context():
        yield app


def batches() -> int:
    return db.session.execute(sa.select(sa.func.count(WebhookBatch.id))).scalar()


def alerts() -> list[OperatorAlert]:
    db.session.expire_all()
    return list(db.session.execute(sa.select(OperatorAlert)).scalars())


def post(app, headers: dict[str, str], source: str, body: bytes | None = None) -> int:
    http = app.test_client()
    return http.post(
        URL, data=body or event(), headers=headers, environ_base={"REMOTE_ADDR": source}
    ).status_code


def test_a_replayed_postmark_event_is_acknowledged_but_stored_once(postmark):
    for _ in range(4):
        assert post(postmark, credentials(), "10.0.0.1") == 200
    assert batches() == 1
    # Another event (another body) is a new delivery; so is the same one after the replay window.
    assert post(postmark, credentials(), "10.0.0.1", event("webhook_open.json")) == 200
    assert batches() == 2
    seen = redis_key("webhook-seen", "postmark", "*", app=postmark)
    [remembered, _] = postmark.extensions["redis"].keys(seen)
    assert 12 * 3600 < postmark.extensions["redis"].ttl(remembered) <= 24 * 3600


def test_wrong_credentials_are_throttled_per_source_and_the_burst_alerts(postmark):
    answers = [post(postmark, credentials(f"guess-{index}"), "203.0.113.7") for index in range(300)]
    assert answers[:5] == [403] * 5
    assert answers[5:] == [429] * 295  # answered without a look at the credentials
    # Even the right password gets nowhere from that address now (a real provider retries a 429).
    assert post(postmark, credentials(), "203.0.113.7") == 429
    assert batches() == 0
    # Postmark itself, from its own addresses, is not held back by the guesser.
    assert post(postmark, credentials(), "50.31.156.6") == 200
    assert batches() == 1
    [alert] = alerts()
    assert alert.kind == webhook_guard.ALERT_KIND and alert.resolved_at is None
    assert "postmark event webhook refused 3 requests" in alert.message


def test_a_burst_spread_over_many_sources_alerts_once(postmark):
    for source in range(10):
        assert post(postmark, credentials("wrong"), f"198.51.100.{source}") == 403
    assert [alert.kind for alert in alerts()] == [webhook_guard.ALERT_KIND]


def test_accepted_requests_never_count_against_their_source(postmark):
    bodies = [event("webhook_delivery.json").replace(b"}", f', "N": {n}}}'.encode(), 1) for n in range(12)]
    assert [post(postmark, credentials(), "50.31.156.6", body) for body in bodies] == [200] * 12
    assert alerts() == []


def test_wrong_inbound_secrets_are_throttled_per_source_on_sendgrid_too(make_app):
    """SendGrid's Inbound Parse route: a guesser of the shared secret is answered 429 after a few
    tries, while SendGrid's own address, with the secret, is not held back."""
    app = make_app(
        INBOUND_WEBHOOK_SECRET="inbound-secret",
        RATELIMIT_ENABLED=True,
        WEBHOOK_FAILURE_RATE_LIMIT="5 per 10 minutes",
    )

    def inbound(password: str, source: str) -> int:
        token = base64.b64encode(f"sendgrid:{password}".encode()).decode()
        return (
            app.test_client()
            .post(
                "/webhooks/sendgrid/inbound",
                data={"to": "support@platform.example"},
                content_type="multipart/form-data",
                headers={"Authorization": f"Basic {token}"},
                environ_base={"REMOTE_ADDR": source},
            )
            .status_code
        )

    answers = [inbound(f"guess-{index}", "203.0.113.9") for index in range(40)]
    assert answers[:5] == [401] * 5
    assert answers[5:] == [429] * 35
    assert inbound("inbound-secret", "203.0.113.9") == 429
    # SendGrid's own address gets past the secret check (its post is then read: no mail in it).
    assert inbound("inbound-secret", "167.89.0.10") not in (401, 429)
