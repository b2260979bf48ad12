"""The signed event webhook, end to end: the sandbox signs and posts, our route verifies, stores
and acknowledges, a job applies; replays in any order and number end in the same statuses."""

from __future__ import annotations

import random
import time
from datetime import datetime, timezone

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric import ec

from tests.helpers import add_content, one_event, public_key_b64, run_jobs, sign
from webapp.extensions import db
from webapp.models import Client, Email, EmailEvent, PendingEvent, WebhookBatch
from webapp.providers import get_sandbox
from webapp.providers.base import ProviderEvent
from webapp.services import sending

# The database engine shapes what this module tests: CI runs it on PostgreSQL and on SQLite.
pytestmark = pytest.mark.engine

URL = "/webhooks/sendgrid/events"
SCENARIOS = ("delivered", "deferred", "bounced", "machine-open", "clicked", "spam", "stuck")


def test_a_valid_signature_is_stored_and_acknowledged(signed_app, key):
    body = one_event(app_message_id="not-known-yet", sg_event_id="e1")
    response = signed_app.test_client().post(URL, data=body, headers=sign(key, body))
    assert response.status_code == 200
    batch = db.session.execute(sa.select(WebhookBatch)).scalar_one()
    assert batch.body == body  # the exact bytes, trailing CRLF kept
    run_jobs(signed_app)
    db.session.refresh(batch)
    assert batch.applied_at is not None
    # An event for an email we do not know is kept for later, not dropped.
    assert db.session.execute(sa.select(PendingEvent.app_message_id)).scalar_one() == "not-known-yet"


@pytest.mark.parametrize(
    "tamper",
    ["body", "wrong key", "stale", "future", "missing signature", "missing timestamp", "not base64"],
)
def test_a_bad_or_missing_signature_is_refused(signed_app, key, tamper):
    body = one_event(app_message_id="x")
    headers = sign(key, body)
    if tamper == "body":
        body = body.replace(b"delivered", b"bounce")
    elif tamper == "wrong key":
        headers = sign(ec.generate_private_key(ec.SECP256R1()), body)
    elif tamper == "stale":
        headers = sign(key, body, int(time.time()) - 601)
    elif tamper == "future":
        # 602: the route reads the wall clock when the request arrives, up to a second later than
        # this truncated reading (at +601 a slow request would land exactly on the tolerance).
        headers = sign(key, body, int(time.time()) + 602)
    elif tamper == "missing signature":
        del headers["X-Twilio-Email-Event-Webhook-Signature"]
    elif tamper == "missing timestamp":
        del headers["X-Twilio-Email-Event-Webhook-Timestamp"]
    else:
        headers["X-Twilio-Email-Event-Webhook-Signature"] = "%%%not-base64%%%"
    response = signed_app.test_client().post(URL, data=body, headers=headers)
    assert response.status_code == 403
    assert db.session.execute(sa.select(sa.func.count(WebhookBatch.id))).scalar() == 0


@pytest.mark.parametrize("body", [b"not json", b'{"event": "delivered"}', b"[1, 2]", b'[{"email": "a"}]'])
def test_a_signed_but_malformed_body_is_a_bad_request(signed_app, key, body):
    response = signed_app.test_client().post(URL, data=body, headers=sign(key, body))
    assert response.status_code == 400
    assert db.session.execute(sa.select(sa.func.count(WebhookBatch.id))).scalar() == 0


def test_an_oversized_body_is_refused(make_app, key):
    app = make_app(SENDGRID_WEBHOOK_PUBLIC_KEY=public_key_b64(key), WEBHOOK_MAX_BYTES=1000)
    body = one_event(padding="x" * 2000)
    assert app.test_client().post(URL, data=body, headers=sign(key, body)).status_code == 413


def test_unknown_event_types_are_kept_not_fatal(signed_app, key, world):
    email = sending.queue_email(world.client_a, kind="receipt", subject="R", body="B", sent_by=None)
    body = one_event(event="account_status_change", app_message_id=email.app_message_id, sg_event_id="z")
    assert signed_app.test_client().post(URL, data=body, headers=sign(key, body)).status_code == 200
    run_jobs(signed_app)
    kinds = db.session.execute(sa.select(EmailEvent.kind).where(EmailEvent.email_id == email.id)).scalars()
    assert "unknown" in set(kinds)
    db.session.refresh(email)
    assert email.status == "sending"


def test_the_sandbox_batches_replayed_shuffled_and_duplicated_end_in_the_same_statuses(app, world, app_clock):
    """Send one email per scenario, collect every signed batch the sandbox posts, then replay them."""
    app.config["SANDBOX_SPEED"] = 1000.0
    emails = {}
    for scenario in SCENARIOS:
        client = Client(clinic_id=world.clinic_a.id, name=scenario, email=f"pat+{scenario}@example.com")
        db.session.add(client)
        db.session.commit()
        emails[scenario] = sending.queue_email(
            client, kind="receipt", subject=scenario, body="-", sent_by=None
        )
        add_content(emails[scenario])  # an HTML part with a link: opens and clicks can be tracked
        db.session.commit()
    run_jobs(app)  # the worker sends them all through the sandbox
    app_clock.advance(0.1)  # 100 of the sandbox's seconds pass

    posted: list[tuple[bytes, dict[str, str]]] = []
    http = app.test_client()

    def post(body: bytes, headers: dict[str, str]) -> int:
        posted.append((body, headers))
        return http.post(URL, data=body, headers=headers).status_code

    assert get_sandbox(app.config).deliver_webhooks(post=post) > 0
    run_jobs(app)
    expected = {
        "delivered": "delivered",
        "deferred": "delivered",
        "bounced": "failed",
        "machine-open": "open",
        "clicked": "clicked",
        "spam": "spam-report",
        "stuck": "processed",
    }
    first = {name: db.session.get(Email, email.id).status for name, email in emails.items()}
    assert first == expected
    timeline_size = db.session.execute(sa.select(sa.func.count(EmailEvent.id))).scalar()
    machine_open = db.session.execute(
        sa.select(EmailEvent.machine).where(
            EmailEvent.email_id == emails["machine-open"].id, EmailEvent.kind == "open"
        )
    ).scalar_one()
    assert machine_open is True

    # The same batches again, shuffled and each posted up to three times: nothing changes.
    rng = random.Random(7)
    replay = [batch for batch in posted for _ in range(rng.randint(1, 3))]
    rng.shuffle(replay)
    for body, headers in replay:
        assert http.post(URL, data=body, headers=headers).status_code == 200
    run_jobs(app)
    db.session.expire_all()
    assert {name: db.session.get(Email, email.id).status for name, email in emails.items()} == expected
    assert db.session.execute(sa.select(sa.func.count(EmailEvent.id))).scalar() == timeline_size


def _open_event(email: Email, machine: bool) -> ProviderEvent:
    return ProviderEvent(
        "open",
        datetime(2026, 11, 2, 9, 0, tzinfo=timezone.utc),
        app_message_id=email.app_message_id,
        provider_message_id="XID",  # the send request's id, as the adapter derives it
        machine=machine,
        raw={"event": "open", "sg_machine_open": machine} if machine else {"event_name": "opened"},
    )


@pytest.mark.parametrize("webhook_first", [True, False])
def test_the_webhook_copy_of_an_event_wins_whichever_arrives_first(app, world, webhook_first):
    from webapp.services.webhooks import apply_provider_events

    email = sending.queue_email(world.client_a, kind="receipt", subject="R", body="B", sent_by=None)
    polled, pushed = _open_event(email, machine=False), _open_event(email, machine=True)
    order = (
        [(pushed, "webhook"), (polled, "poll")] if webhook_first else [(polled, "poll"), (pushed, "webhook")]
    )
    for event, source in order:
        apply_provider_events([event], source)
        db.session.commit()
    stored = db.session.execute(sa.select(EmailEvent).where(EmailEvent.kind == "open")).scalars().all()
    assert [(event.machine, event.source) for event in stored] == [(True, "webhook")]


def test_an_event_proves_an_in_doubt_send_and_names_its_provider_id(app, world):
    from webapp.services.webhooks import apply_provider_events

    email = sending.queue_email(world.client_a, kind="receipt", subject="R", body="B", sent_by=None)
    email.send_state = "in_doubt"
    db.session.commit()
    apply_provider_events([_open_event(email, machine=False)], "webhook")
    db.session.commit()
    assert (email.send_state, email.provider_message_id) == ("accepted", "XID")
    assert email.next_poll_at is not None


def test_nul_characters_and_lone_surrogates_from_the_provider_are_stored_as_replacements(app, world):
    from webapp.services.webhooks import apply_provider_events

    email = sending.queue_email(world.client_a, kind="receipt", subject="R", body="B", sent_by=None)
    bounce = ProviderEvent(
        "bounce",
        datetime(2026, 11, 2, 9, 0, tzinfo=timezone.utc),
        app_message_id=email.app_message_id,
        reason="550 no\x00such user\ud800",
        raw={"reason": "550 no\x00such user", "k\x00": ["\x00", "\udfff"]},
    )
    apply_provider_events([bounce], "webhook")
    db.session.commit()
    stored = db.session.execute(sa.select(EmailEvent).where(EmailEvent.kind == "bounce")).scalar_one()
    assert stored.reason == "550 no\ufffdsuch user\ufffd"
    assert stored.raw == {"reason": "550 no\ufffdsuch user", "k\ufffd": ["\ufffd", "\ufffd"]}
    assert email.status == "failed"
