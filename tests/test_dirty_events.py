"""Events from outside that a database would refuse: made storable at intake, set aside when a batch
still fails (the rest applied), never retried for ever; and the clocks they come with."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
import sqlalchemy as sa

from tests.helpers import public_key_b64, run_jobs, sign
from webapp import intake_text
from webapp.extensions import db
from webapp.models import Email, EmailEvent, OperatorAlert, PendingEvent, WebhookBatch, utcnow
from webapp.providers.postmark import parse_webhook_event
from webapp.providers.sendgrid import check_webhook_body, parse_webhook_events
from webapp.services import clock_skew, events, maintenance, sending, set_aside, webhooks

URL = "/webhooks/sendgrid/events"


@pytest.mark.parametrize(
    ("body", "wanted"),
    [
        (b'["550 no\\u0000such user"]', ["550 no\ufffdsuch user"]),
        (b'{"k\\u0000": "\\ud800 and \\udfff"}', {"k\ufffd": "\ufffd and \ufffd"}),
        (b'["\\ud83d\\ude00"]', ["\U0001f600"]),  # a pair completed is a character, kept
        (b'["caf\xe9"]', ["caf\ufffd"]),  # not UTF-8
        (b'["tab\there"]', ["tab\there"]),  # a raw control character inside a string
        (b"[18446744073709551616]", [18446744073709551616]),  # past 64 bits
    ],
)
def test_json_from_outside_is_read_into_storable_values(body, wanted):
    assert intake_text.loads(body) == wanted


@pytest.mark.parametrize("body", [b"[NaN]", b"[Infinity]", b"not json", b"", b"[1,"])
def test_what_is_not_json_is_still_refused(body):
    with pytest.raises(ValueError):
        intake_text.loads(body)


def test_both_wire_formats_read_dirty_text_as_replacements():
    sendgrid = json.dumps(
        [{"event": "bounce", "timestamp": 1, "reason": "no\x00such \ud800", "app_message_id": "a"}]
    ).encode()
    assert check_webhook_body(sendgrid) == 1
    (bounce,) = parse_webhook_events(sendgrid)
    assert bounce.reason == "no\ufffdsuch \ufffd" and bounce.raw["reason"] == bounce.reason
    postmark = json.dumps(
        {
            "RecordType": "Bounce",
            "Type": "HardBounce",
            "BouncedAt": "2026-12-01T10:00:00Z",
            "Details": "smtp;550 no\x00such user \udfff",
            "MessageID": "m-1",
        }
    ).encode()
    (event,) = parse_webhook_event(postmark)
    assert event.reason == "smtp;550 no\ufffdsuch user \ufffd"


def test_a_signed_sendgrid_batch_with_a_lone_surrogate_is_accepted_not_refused(signed_app, key, world):
    """It was a 400 (the whole batch dropped by the provider after its retries)."""
    email = sending.queue_email(world.client_a, kind="receipt", subject="R", body="B", sent_by=None)
    body = json.dumps(
        [
            {
                "email": "a@x",
                "timestamp": int(time.time()),
                "event": "bounce",
                "reason": "\ud800",
                "app_message_id": email.app_message_id,
            },
        ]
    ).encode()
    assert signed_app.test_client().post(URL, data=body, headers=sign(key, body)).status_code == 200
    run_jobs(signed_app)
    db.session.refresh(email)
    assert email.status == "failed"


def test_an_unknown_emails_dirty_event_is_kept_for_later(signed_app, key):
    """The kept copy (jsonb on PostgreSQL) was where a NUL failed the whole batch."""
    body = json.dumps(
        [
            {
                "email": "a@x",
                "timestamp": int(time.time()),
                "event": "bounce",
                "reason": "no\x00pe",
                "app_message_id": "not-yet",
            }
        ]
    ).encode()
    assert signed_app.test_client().post(URL, data=body, headers=sign(key, body)).status_code == 200
    run_jobs(signed_app)
    kept = db.session.execute(sa.select(PendingEvent)).scalar_one()
    assert kept.payload["reason"] == "no\ufffdpe"
    assert db.session.execute(sa.select(WebhookBatch.applied_at)).scalar_one() is not None


def _delivered(email: Email, **fields) -> dict:
    return {
        "email": email.to_address,
        "timestamp": int(time.time()),
        "event": "delivered",
        "app_message_id": email.app_message_id,
        **fields,
    }


def test_a_batch_that_fails_whole_is_applied_in_pieces_and_the_bad_event_set_aside(
    signed_app, key, world, monkeypatch
):
    """Whatever the database refuses (here: any event marked "poison", refused as PostgreSQL refuses
    a NUL), the other events of the batch are applied on the first run; the bad one is set aside
    with an alert naming the batch and its position, and the batch is not retried for ever."""
    emails = [
        sending.queue_email(world.client_a, kind="receipt", subject=f"R{n}", body="B", sent_by=None)
        for n in range(9)
    ]
    batch_events = [_delivered(email) for email in emails]
    batch_events[6]["poison"] = True
    body = json.dumps(batch_events).encode()
    real_store = events.store_events

    def refusing(batch, source):
        if any(event.raw.get("poison") for _, chunk in batch.values() for event in chunk):
            raise sa.exc.DataError("INSERT", {}, Exception("invalid byte sequence"))
        return real_store(batch, source)

    monkeypatch.setattr(webhooks, "store_events", refusing)
    assert signed_app.test_client().post(URL, data=body, headers=sign(key, body)).status_code == 200
    run_jobs(signed_app)
    db.session.expire_all()
    batch = db.session.execute(sa.select(WebhookBatch)).scalar_one()
    delivered = [db.session.get(Email, email.id).status == "delivered" for email in emails]
    assert delivered == [True] * 6 + [False] + [True] * 2
    assert batch.applied_at is not None
    assert batch.set_aside == [
        {"position": 6, "kind": "delivered", "error": "Exception: invalid byte sequence"}
    ]
    (alert,) = db.session.execute(sa.select(OperatorAlert)).scalars()
    assert (alert.kind, alert.email_id) == (set_aside.SET_ASIDE_ALERT, emails[6].id)
    assert f"Event 6 of stored webhook batch {batch.id}" in alert.message
    assert webhooks.unapplied_batches(utcnow() + timedelta(hours=1)) == []


def test_a_database_failure_is_not_the_events_fault_and_sets_nothing_aside(
    signed_app, key, world, monkeypatch
):
    """A lost connection, a deadlock or a timeout: the batch stays unapplied for the sweep to apply
    again; no event is set aside."""
    email = sending.queue_email(world.client_a, kind="receipt", subject="R", body="B", sent_by=None)
    body = json.dumps([_delivered(email)]).encode()

    def down(batch, source):
        raise sa.exc.OperationalError("INSERT", {}, Exception("server closed the connection"))

    assert signed_app.test_client().post(URL, data=body, headers=sign(key, body)).status_code == 200
    batch_id = db.session.execute(sa.select(WebhookBatch.id)).scalar_one()
    monkeypatch.setattr(webhooks, "store_events", down)
    with pytest.raises(sa.exc.OperationalError):
        webhooks.apply_batch(batch_id)
    db.session.rollback()
    batch = db.session.get(WebhookBatch, batch_id)
    assert (batch.applied_at, batch.set_aside) == (None, None)
    monkeypatch.undo()
    webhooks.apply_batch(batch_id)
    db.session.refresh(email)
    assert email.status == "delivered"


def test_a_status_is_never_dated_after_we_received_it(app, world):
    """An event dated 2 h in the future (a provider clock ahead) gives the status our receipt time."""
    from webapp.providers.base import ProviderEvent

    email = sending.queue_email(world.client_a, kind="receipt", subject="R", body="B", sent_by=None)
    now = utcnow()
    webhooks.apply_provider_events(
        [ProviderEvent("processed", now + timedelta(hours=2), app_message_id=email.app_message_id)], "webhook"
    )
    db.session.commit()
    db.session.refresh(email)
    assert email.status == "processed"
    assert now <= email.status_changed_at <= utcnow()
    assert email.status_received_at == email.status_changed_at
    stored = db.session.execute(
        sa.select(EmailEvent.occurred_at).where(EmailEvent.kind == "processed")
    ).scalar()
    assert stored == now + timedelta(hours=2)  # the timeline keeps the provider's word


def test_a_skew_within_minutes_is_not_noted_and_a_noted_one_closes_after_an_hour(app, app_clock):
    clock_skew.note_signed_time(120, accepted=True)
    assert clock_skew.alert_if_skewed(utcnow()) == 0
    clock_skew.note_signed_time(-3 * 3600 + 60, accepted=True)
    assert clock_skew.alert_if_skewed(utcnow()) == 1
    assert clock_skew.alert_if_skewed(utcnow()) == 1
    (alert,) = db.session.execute(sa.select(OperatorAlert)).scalars()
    assert "2 h 59 min ahead of our clock" in alert.message and "still accepted" in alert.message
    app.extensions["redis"].delete("clock-skew:webhook")  # an hour later, it has expired
    maintenance.sweep()
    db.session.refresh(alert)
    assert alert.resolved_at is not None


def test_the_replay_memory_covers_the_whole_window_of_a_skewed_clock(make_app, key):
    """Signed 2 h 50 min behind our clock, a batch is accepted, and a copy is recognised as a replay
    until its signature leaves the window (10 minutes later), not for 10 minutes after it was signed."""
    app = make_app(SENDGRID_WEBHOOK_PUBLIC_KEY=public_key_b64(key))
    with app.app_context():
        body = json.dumps([{"email": "a@x", "timestamp": 1, "event": "delivered"}]).encode()
        headers = sign(key, body, int(time.time()) - (2 * 3600 + 50 * 60))
        http = app.test_client()
        assert http.post(URL, data=body, headers=headers).status_code == 200
        assert http.post(URL, data=body, headers=headers).status_code == 200
        assert db.session.execute(sa.select(sa.func.count(WebhookBatch.id))).scalar() == 1
        (remembered,) = app.extensions["redis"].keys("webhook-seen:sendgrid:*")
        assert 9 * 60 <= app.extensions["redis"].ttl(remembered) <= 10 * 60 + 1
        stale = sign(key, body, int(time.time()) - (3 * 3600 + 5))
        assert http.post(URL, data=body, headers=stale).status_code == 403


def test_only_a_correctly_signed_webhook_can_report_a_skew(make_app, key):
    """A stale request signed by someone else is refused and noted nowhere: nobody but the
    provider can raise the clock alert."""
    from cryptography.hazmat.primitives.asymmetric import ec

    app = make_app(SENDGRID_WEBHOOK_PUBLIC_KEY=public_key_b64(key))
    with app.app_context():
        body = json.dumps([{"email": "a@x", "timestamp": 1, "event": "delivered"}]).encode()
        stale = int(time.time()) - 5 * 3600
        forged = sign(ec.generate_private_key(ec.SECP256R1()), body, stale)
        assert app.test_client().post(URL, data=body, headers=forged).status_code == 403
        assert clock_skew.alert_if_skewed(utcnow()) == 0
        assert app.test_client().post(URL, data=body, headers=sign(key, body, stale)).status_code == 403
        assert clock_skew.alert_if_skewed(utcnow()) == 1


def test_a_batch_whose_every_event_is_refused_raises_a_handful_of_alerts_not_one_per_event(
    signed_app, key, world, monkeypatch
):
    """A bug that refuses every event: each is set aside and listed on the batch (kept whole), the
    first five alerted one by one and the rest counted in one more alert."""
    emails = [
        sending.queue_email(world.client_a, kind="receipt", subject=f"R{n}", body="B", sent_by=None)
        for n in range(12)
    ]
    body = json.dumps([_delivered(email) for email in emails]).encode()

    def refusing(batch, source):
        raise sa.exc.DataError("INSERT", {}, Exception("refused"))

    monkeypatch.setattr(webhooks, "store_events", refusing)
    assert signed_app.test_client().post(URL, data=body, headers=sign(key, body)).status_code == 200
    run_jobs(signed_app)
    batch = db.session.execute(sa.select(WebhookBatch)).scalar_one()
    assert [item["position"] for item in batch.set_aside] == list(range(12))
    messages = db.session.execute(sa.select(OperatorAlert.message).order_by(OperatorAlert.id)).scalars().all()
    assert len(messages) == 6
    assert messages[-1].startswith(f"12 of the 12 events of stored webhook batch {batch.id}")
