"""A signed event batch posted again within its signature's lifetime is acknowledged and dropped:
remembered in Redis (keyed on what was signed, so a re-encoded signature is the same delivery) until
the signature expires."""

from __future__ import annotations

import base64
import time

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from tests.helpers import EVENTS_URL as URL
from tests.helpers import one_event, public_key_b64, sign
from webapp.extensions import db
from webapp.models import WebhookBatch

# The database engine shapes what this module tests: CI runs it on PostgreSQL and on SQLite.
pytestmark = pytest.mark.engine

SIGNATURE = "X-Twilio-Email-Event-Webhook-Signature"
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def batches() -> int:
    return db.session.execute(sa.select(sa.func.count(WebhookBatch.id))).scalar()


def twin(signature_b64: str) -> str:
    """The other signature that verifies for the same message: (r, n - s)."""
    r, s = decode_dss_signature(base64.b64decode(signature_b64))
    return base64.b64encode(encode_dss_signature(r, P256_ORDER - s)).decode()


def test_a_replayed_batch_is_acknowledged_but_stored_once(signed_app, key):
    http = signed_app.test_client()
    body = one_event(app_message_id="replayed")
    stamp = int(time.time())
    headers = sign(key, body, stamp)
    assert http.post(URL, data=body, headers=headers).status_code == 200
    assert batches() == 1
    for _ in range(3):
        assert http.post(URL, data=body, headers=headers).status_code == 200
    assert batches() == 1
    # The same events signed again (as a provider retry is) are a new delivery; deduplication of
    # the events themselves takes care of them.
    # (Relative to the first stamp: a fresh clock reading could fall on the first one's second.)
    assert http.post(URL, data=body, headers=sign(key, body, stamp - 1)).status_code == 200
    assert batches() == 2


def test_a_replay_with_the_signatures_twin_is_still_a_replay(signed_app, key):
    http = signed_app.test_client()
    body = one_event(app_message_id="twin")
    headers = sign(key, body)
    assert http.post(URL, data=body, headers=headers).status_code == 200
    other = {**headers, SIGNATURE: twin(headers[SIGNATURE])}
    assert other[SIGNATURE] != headers[SIGNATURE]
    assert http.post(URL, data=body, headers=other).status_code == 200  # it verifies...
    assert batches() == 1  # ...and is not stored again


def test_deliveries_are_remembered_only_while_their_signature_is_valid(signed_app, key):
    tolerance = signed_app.config["WEBHOOK_TOLERANCE_SECONDS"]
    body = one_event(app_message_id="ttl")
    stamp = int(time.time()) - 100
    assert signed_app.test_client().post(URL, data=body, headers=sign(key, body, stamp)).status_code == 200
    redis = signed_app.extensions["redis"]
    [remembered] = redis.keys("webhook-seen:sendgrid:*")
    assert tolerance - 100 - 5 <= redis.ttl(remembered) <= tolerance - 100 + 1


def test_a_batch_that_could_not_be_stored_is_taken_when_posted_again(signed_app, key, monkeypatch):
    from webapp.services import webhooks

    def broken(provider: str, body: bytes) -> None:
        raise sa.exc.OperationalError("INSERT", {}, Exception("database went away"))

    http = signed_app.test_client()
    body = one_event(app_message_id="retry")
    headers = sign(key, body)
    monkeypatch.setattr(webhooks, "store_batch", broken)
    # A 5xx the provider retries, never a 4xx it would drop: and no error escapes the view.
    assert http.post(URL, data=body, headers=headers).status_code == 503
    monkeypatch.undo()
    db.session.rollback()
    assert http.post(URL, data=body, headers=headers).status_code == 200
    assert batches() == 1


def test_without_redis_batches_are_still_stored(make_app, key):
    app = make_app(SENDGRID_WEBHOOK_PUBLIC_KEY=public_key_b64(key))
    with app.app_context():
        app.extensions["redis"] = type(app.extensions["redis"]).from_url("redis://127.0.0.1:1/0")
        body = one_event(app_message_id="no-redis")
        assert app.test_client().post(URL, data=body, headers=sign(key, body)).status_code == 200
        assert batches() == 1


def test_the_check_uses_the_verified_key_only(signed_app):
    # An unsigned replay attempt never reaches the memory of deliveries.
    body = one_event(app_message_id="unsigned")
    other = ec.generate_private_key(ec.SECP256R1())
    assert signed_app.test_client().post(URL, data=body, headers=sign(other, body)).status_code == 403
    assert signed_app.extensions["redis"].keys("webhook-seen:*") == []
