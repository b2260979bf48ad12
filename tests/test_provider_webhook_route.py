"""The event webhook route speaks only the contract: POST /webhooks/<wire format>/events verifies
with the configured provider, checks the body, keys replays on the provider's verdict, and stores the
batch under the wire format's name, whose own parser applies it later."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
import sqlalchemy as sa

from webapp import providers
from webapp.extensions import db
from webapp.models import WebhookBatch
from webapp.providers import webhook_parser, wire_format
from webapp.providers.base import ProviderEvent, WebhookVerdict
from webapp.providers.sendgrid.webhooks import parse_webhook_events
from webapp.redis_keys import redis_key
from webapp.services import webhooks


class StubProvider:
    """Answers the route's two questions as told, and counts them."""

    name = "sendgrid"

    def __init__(self, verdict: WebhookVerdict, well_formed: bool = True) -> None:
        self.verdict = verdict
        self.well_formed = well_formed
        self.seen: list[bytes] = []

    def verify_webhook(self, headers: Mapping[str, str], body: bytes, now: float) -> WebhookVerdict:
        self.seen.append(body)
        return self.verdict

    def check_webhook(self, body: bytes) -> int:
        if not self.well_formed:
            raise ValueError("not a batch")
        return 1


@pytest.fixture
def stub(app, monkeypatch):
    def install(verdict: WebhookVerdict, well_formed: bool = True) -> StubProvider:
        provider = StubProvider(verdict, well_formed)
        monkeypatch.setattr("webapp.webhooks.routes.get_provider", lambda config: provider)
        return provider

    return install


def stored() -> list[WebhookBatch]:
    return list(db.session.execute(sa.select(WebhookBatch).order_by(WebhookBatch.id)).scalars())


def test_only_the_configured_wire_format_has_an_events_url(app, stub):
    provider = stub(WebhookVerdict(True, None))
    http = app.test_client()
    assert wire_format(app.config) == "sendgrid"
    for other in ("postmark", "mailgun", "sandbox"):
        assert http.post(f"/webhooks/{other}/events", data=b"[]").status_code == 404
    assert provider.seen == []  # never asked: a stranger's URL costs no verification
    assert http.post("/webhooks/sendgrid/events", data=b"[]").status_code == 200
    assert [batch.provider for batch in stored()] == ["sendgrid"]


def test_the_sandbox_answers_on_the_url_of_the_format_it_plays(make_app):
    app = make_app(EMAIL_PROVIDER="sendgrid", SENDGRID_API_KEY="SG.test")
    assert wire_format(app.config) == "sendgrid"
    assert wire_format({"EMAIL_PROVIDER": "sandbox", "SANDBOX_WIRE_FORMAT": "postmark"}) == "postmark"


def test_unverified_is_403_and_malformed_is_400_and_neither_is_stored(app, stub):
    http = app.test_client()
    stub(WebhookVerdict(False))
    assert http.post("/webhooks/sendgrid/events", data=b"[]").status_code == 403
    stub(WebhookVerdict(True, None), well_formed=False)
    assert http.post("/webhooks/sendgrid/events", data=b"{").status_code == 400
    assert stored() == []


def test_replays_are_keyed_on_the_verdict_and_only_when_it_gives_a_key(app, stub):
    http = app.test_client()
    redis = app.extensions["redis"]
    stub(WebhookVerdict(True, None))  # a provider that signs nothing: every post is stored
    for _ in range(2):
        assert http.post("/webhooks/sendgrid/events", data=b"[]").status_code == 200
    assert len(stored()) == 2 and redis.keys(redis_key("webhook-seen", "*")) == []

    stub(WebhookVerdict(True, "delivery-1", 30.0))
    for _ in range(3):
        assert http.post("/webhooks/sendgrid/events", data=b"[]").status_code == 200
    assert len(stored()) == 3
    [remembered] = redis.keys(redis_key("webhook-seen", "sendgrid", "*"))
    assert 0 < redis.ttl(remembered) <= 30


CALLS: list[bytes] = []


def recording_parser(body: bytes) -> list[ProviderEvent]:
    CALLS.append(body)
    return []


def test_a_stored_batch_is_applied_with_the_parser_of_its_own_provider(app, monkeypatch):
    assert webhook_parser("sendgrid") is parse_webhook_events
    with pytest.raises(KeyError):
        webhook_parser("mailgun")
    monkeypatch.setitem(providers.WEBHOOK_PARSERS, "elsewhere", f"{__name__}:recording_parser")
    CALLS.clear()
    batch = webhooks.store_batch("elsewhere", b"whatever-that-provider-sends")
    assert webhooks.apply_batch(batch.id) == 0
    assert CALLS == [b"whatever-that-provider-sends"]
    db.session.refresh(batch)
    assert batch.applied_at is not None
