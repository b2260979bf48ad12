"""Events find their email without our custom argument: by the send request's id (SendGrid's
X-Message-Id, which starts the current sg_message_id; older ones start with a host name and name
none) and the recipient. Replays the payloads of django-anymail's SendGrid webhook tests, kept in
tests/fixtures/sendgrid_webhook_events.json with their source."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.helpers import ON_POSTGRES
from webapp import providers
from webapp.extensions import db
from webapp.models import Email, EmailEvent, PendingEvent, WebhookBatch, utcnow
from webapp.providers.base import ProviderEvent, SendResult
from webapp.providers.sendgrid import parse_webhook_events, x_message_id
from webapp.services import maintenance, sending, webhooks

# The database engine shapes what this module tests: CI runs it on PostgreSQL and on SQLite.
pytestmark = pytest.mark.engine

FIXTURES = json.loads((Path(__file__).parent / "fixtures" / "sendgrid_webhook_events.json").read_text())
PEER_CASES = FIXTURES["cases"]
BUILT_CASES = FIXTURES["built_here"]["cases"]
ALL_CASES = PEER_CASES + BUILT_CASES

# What each email the peer payloads name ends as (one send request, wrfRR..., had three recipients).
EXPECTED_STATUS = {
    ("wrfRRvF7Q0GgwUo2CvDmEA", "recipient@example.com"): "open",
    ("wrfRRvF7Q0GgwUo2CvDmEA", "invalid@invalid"): "failed",
    ("wrfRRvF7Q0GgwUo2CvDmEA", "unsubscribe@example.com"): "failed",
    ("14c5d75ce93.dfd.64b469", "example@example.com"): "failed",
    ("Lli-03HcQ5-JLybO9fXsJg", "noreply@example.com"): "failed",
    ("u9Gvi3mzT6iC2poAb58_qQ", "recipient@example.com"): "deferred",
    ("_fjPjuJfRW-IPs5SuvYotg", "recipient@example.com"): "clicked",
}


def apply_body(events: list[dict]) -> None:
    """Store a webhook body and apply it, as the route and the job do."""
    batch = webhooks.store_batch("sendgrid", json.dumps(events).encode())
    webhooks.apply_batch(batch.id)


def add_sent_email(world, provider_message_id: str | None, to_address: str) -> Email:
    """An email the provider accepted under this request id (None: its answer is not recorded yet)."""
    email = Email(
        clinic_id=world.clinic_a.id,
        client_id=world.client_a.id,
        to_address=to_address,
        subject="Appointment reminder",
        body="Hello",
        kind="appointment_reminder",
        provider="sendgrid",
        send_state="accepted",
        provider_message_id=provider_message_id,
        created_at=utcnow(),
    )
    db.session.add(email)
    db.session.commit()
    return email


def timeline(email: Email) -> list[str]:
    return list(
        db.session.execute(
            # Ties in time in the order stored (the fixture has a delivery and an open in one second).
            sa.select(EmailEvent.kind)
            .where(EmailEvent.email_id == email.id)
            .order_by(EmailEvent.occurred_at, EmailEvent.id)
        ).scalars()
    )


def pending_count() -> int:
    return db.session.execute(sa.select(sa.func.count(PendingEvent.id))).scalar()


@pytest.mark.parametrize("case", ALL_CASES, ids=[case["name"] for case in ALL_CASES])
def test_each_payload_names_its_send_request_or_none(case):
    [event] = parse_webhook_events(json.dumps([case["event"]]).encode())
    assert event.provider_message_id == case["x_message_id"]
    assert event.app_message_id is None  # Anymail's custom argument is not ours
    assert event.recipient == case["recipient"]


@pytest.mark.parametrize(
    ("msg_id", "expected"),
    [
        (
            "LRzXl_NHStOGhQ4kofSm_A.filterdrecv-p3mdw1-756b745b58-kmzbl-18-5F5FC76C-9.0",
            "LRzXl_NHStOGhQ4kofSm_A",
        ),
        ("filter0001p1las1-16816-5E7C2B0B-1.0", None),
        ("filter0123p1mdw1.13432.5B3A6F4C13.0", None),
        ("", None),
        ("a b.filter0001.0", None),  # not an id SendGrid makes
    ],
)
def test_polled_message_ids_are_read_the_same_way(msg_id, expected):
    assert x_message_id(msg_id) == expected


def test_the_peer_payloads_find_their_email_or_wait_and_copies_with_our_id_collapse(app, world):
    emails = {key: add_sent_email(world, *key) for key in EXPECTED_STATUS}

    apply_body([case["event"] for case in ALL_CASES])

    for case in PEER_CASES:
        email = emails[(case["x_message_id"], case["recipient"])]
        kinds = timeline(email)
        assert kinds, case["name"]
    assert {key: db.session.get(Email, email.id).status for key, email in emails.items()} == EXPECTED_STATUS
    assert timeline(emails[("wrfRRvF7Q0GgwUo2CvDmEA", "recipient@example.com")]) == [
        "processed",
        "delivered",  # once: the sender-chosen smtp-id copy is the same event
        "open",
    ]
    # The events that name no request wait for nothing in particular, and are not guessed.
    assert pending_count() == len(BUILT_CASES)
    stored = db.session.execute(sa.select(sa.func.count(EmailEvent.id))).scalar()
    assert stored == len(PEER_CASES) - 1

    # The same events with our custom argument, shuffled, one per batch: stored once each all the same.
    with_our_id = [
        {**case["event"], "app_message_id": emails[(case["x_message_id"], case["recipient"])].app_message_id}
        for case in PEER_CASES
    ]
    random.Random(13).shuffle(with_our_id)
    for event in with_our_id:
        apply_body([event])
    db.session.expire_all()
    assert db.session.execute(sa.select(sa.func.count(EmailEvent.id))).scalar() == stored
    assert {key: db.session.get(Email, email.id).status for key, email in emails.items()} == EXPECTED_STATUS
    assert pending_count() == len(BUILT_CASES)


@pytest.mark.parametrize("webhook_first", [True, False])
def test_a_polled_copy_and_a_webhook_copy_without_our_id_are_one_event(app, world, webhook_first):
    email = add_sent_email(world, "XID", "jane@example.com")
    at = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
    polled = ProviderEvent("open", at, app_message_id=email.app_message_id, provider_message_id="XID")
    pushed = ProviderEvent("open", at, provider_message_id="XID", recipient="Jane@Example.com", machine=True)
    order = (
        [(pushed, "webhook"), (polled, "poll")] if webhook_first else [(polled, "poll"), (pushed, "webhook")]
    )
    for event, source in order:
        webhooks.apply_provider_events([event], source)
        db.session.commit()
    stored = db.session.execute(sa.select(EmailEvent).where(EmailEvent.email_id == email.id)).scalars().all()
    assert [(event.kind, event.machine, event.source) for event in stored] == [("open", True, "webhook")]
    assert pending_count() == 0


class AcceptingProvider:
    """A provider whose answer to the send names the request the early event named."""

    def send(self, message: object) -> SendResult:
        return SendResult("accepted", provider_message_id="XLATE")

    def send_batch(self, messages: list[object]) -> list[SendResult]:
        return [self.send(message) for message in messages]


def test_an_event_without_our_id_before_its_send_record_is_matched_when_the_record_arrives(app, world):
    email = sending.queue_email(world.client_a, kind="receipt", subject="R", body="B", sent_by=None)
    early = {
        "email": email.to_address,
        "timestamp": int(utcnow().timestamp()),
        "event": "delivered",
        "sg_event_id": "ZWFybHk",
        "sg_message_id": "XLATE.filterdrecv-p3mdw1-756b745b58-kmzbl-18-5F5FC76C-9.0",
        "response": "250 OK",
    }
    apply_body([early])
    assert db.session.execute(sa.select(PendingEvent.provider_message_id)).scalar_one() == "XLATE"
    assert maintenance.sweep()["adopted"] == 0  # nothing names XLATE yet

    assert sending.deliver(email.id, provider=AcceptingProvider()) == "accepted"
    assert maintenance.sweep()["adopted"] == 1
    db.session.refresh(email)
    assert email.status == "delivered"
    assert pending_count() == 0
    # The webhook's retry of the same event changes nothing.
    apply_body([early])
    assert timeline(email).count("delivered") == 1
    assert pending_count() == 0


def test_two_emails_of_one_request_to_one_address_wait_rather_than_guess(app, world):
    first = add_sent_email(world, "XBATCH", "pat@example.com")
    second = add_sent_email(world, "XBATCH", "pat@example.com")
    other = add_sent_email(world, "XBATCH", "sam@example.com")
    now = int(utcnow().timestamp())
    apply_body(
        [
            {
                "email": "pat@example.com",
                "timestamp": now,
                "event": "delivered",
                "sg_message_id": "XBATCH.filter01.0",
            },
            {
                "email": "sam@example.com",
                "timestamp": now,
                "event": "delivered",
                "sg_message_id": "XBATCH.filter01.1",
            },
        ]
    )
    assert (timeline(first), timeline(second), timeline(other)) == ([], [], ["delivered"])
    assert pending_count() == 1
    assert maintenance.sweep()["adopted"] == 0
    assert pending_count() == 1  # still waiting, not dropped by the attempt
    maintenance.sweep(utcnow() + timedelta(days=8))
    assert pending_count() == 0


@pytest.mark.skipif(not ON_POSTGRES, reason="SQLite takes no row locks")
def test_a_batch_applies_the_emails_nobody_holds_first_and_the_held_ones_after(app, world):
    free, held = (
        add_sent_email(world, "XFREE", "a@example.com"),
        add_sent_email(world, "XHELD", "b@example.com"),
    )
    at = int(utcnow().timestamp())
    body = [
        {
            "email": email.to_address,
            "timestamp": at,
            "event": "delivered",
            "sg_event_id": f"d{email.id}",
            "sg_message_id": f"X{email.id}.filter-0",
            "app_message_id": email.app_message_id,
        }
        for email in (free, held)
    ]
    batch = webhooks.store_batch("sendgrid", json.dumps(body).encode())
    events = parse_webhook_events(batch.body)
    other = db.engine.connect()  # another job, holding one of the emails
    try:
        other.begin()
        other.execute(sa.text("SELECT id FROM email WHERE id = :id FOR UPDATE"), {"id": held.id})
        changed, unknown, left = webhooks._apply_to_owners(events, "webhook", skip_held=True)
        db.session.commit()
        assert (changed, unknown) == (1, [])
        assert [event.app_message_id for event in left] == [held.app_message_id]
        assert [
            email.status
            for email in db.session.execute(
                sa.select(Email).where(Email.id.in_([free.id, held.id])).order_by(Email.id)
            ).scalars()
        ] == ["delivered", "sending"]
    finally:
        other.rollback()
        other.close()
    webhooks.apply_batch(batch.id)
    db.session.expire_all()
    assert db.session.get(Email, held.id).status == "delivered"
    assert db.session.get(WebhookBatch, batch.id).applied_at is not None
    assert db.session.execute(sa.select(sa.func.count(EmailEvent.id))).scalar() == 2


def delivered_body(email: Email) -> bytes:
    """A webhook body with one delivery of this email."""
    event = {
        "email": email.to_address,
        "timestamp": int(utcnow().timestamp()),
        "event": "delivered",
        "sg_message_id": f"{email.provider_message_id}.filter01.0",
        "app_message_id": email.app_message_id,
    }
    return json.dumps([event]).encode()


def applied(*batches: WebhookBatch) -> list[bool]:
    db.session.expire_all()
    return [db.session.get(WebhookBatch, batch.id).applied_at is not None for batch in batches]


def test_one_job_applies_the_waiting_batches_each_exactly_once(app, world, monkeypatch):
    emails = [add_sent_email(world, f"XMULTI{n}", f"m{n}@example.com") for n in range(4)]
    batches = [webhooks.store_batch("sendgrid", delivered_body(email)) for email in emails]
    monkeypatch.setitem(providers.WEBHOOK_PARSERS, "sendgrid", f"{__name__}:counting_parser")
    PARSED.clear()
    assert webhooks.apply_batch(batches[1].id, more=2) == 3  # its own and the two oldest others
    assert applied(*batches) == [True, True, True, False]
    assert sorted(PARSED) == sorted(batch.body for batch in batches[:3])
    assert webhooks.apply_batch(batches[0].id, more=2) == 1  # already applied: the one left waiting
    assert applied(*batches) == [True] * 4
    assert webhooks.apply_batch(batches[2].id, more=2) == 0
    assert len(PARSED) == 4  # each batch read once
    assert db.session.execute(sa.select(sa.func.count(EmailEvent.id))).scalar() == 4
    assert {email.id: email.status for email in emails} == {email.id: "delivered" for email in emails}


PARSED: list[bytes] = []


def counting_parser(body: bytes) -> list[ProviderEvent]:
    PARSED.append(body)
    return parse_webhook_events(body)


@pytest.mark.skipif(not ON_POSTGRES, reason="SQLite has one writer at a time: no claims")
def test_a_batch_another_job_is_applying_is_left_to_it_until_that_job_dies(app, world):
    emails = [add_sent_email(world, f"XCLAIM{n}", f"c{n}@example.com") for n in range(3)]
    batches = [webhooks.store_batch("sendgrid", delivered_body(email)) for email in emails]
    other = db.engine.connect()  # another job, which claimed the middle batch and is still at it
    try:
        assert other.execute(
            sa.text("SELECT pg_try_advisory_lock(:namespace, :id)"),
            {"namespace": webhooks._CLAIM_NAMESPACE, "id": batches[1].id},
        ).scalar()
        # Its own job finds it taken and applies the ones waiting around it.
        assert webhooks.apply_batch(batches[1].id, more=2) == 2
        assert applied(*batches) == [True, False, True]
        assert webhooks.apply_batch(batches[1].id, more=2) == 0
    finally:
        other.invalidate()  # that job's process dies: its connection, and so its claim, goes with it
        other.close()
    assert webhooks.unapplied_batches(utcnow() + timedelta(minutes=1)) == [batches[1].id]
    assert webhooks.apply_batch(batches[1].id) == 1  # what the sweep's job then does
    assert applied(*batches) == [True, True, True]


def test_a_job_that_fails_between_its_two_steps_leaves_its_batches_for_the_sweep(app, world, monkeypatch):
    emails = [add_sent_email(world, f"XFAIL{n}", f"f{n}@example.com") for n in range(2)]
    batches = [webhooks.store_batch("sendgrid", delivered_body(email)) for email in emails]

    def held_back(events: list[ProviderEvent], source: str, skip_held: bool = False) -> tuple:
        """As if another job held the second email: its events are left for the second step."""
        mine = [event for event in events if event.app_message_id == emails[0].app_message_id]
        changed, unknown, _ = real(mine, source, skip_held)
        return changed, unknown, [event for event in events if event not in mine]

    def dies(*args, **kwargs):
        raise RuntimeError("the job died here")

    real = webhooks._apply_to_owners
    first, second = batches
    monkeypatch.setattr(webhooks, "_apply_to_owners", held_back)
    monkeypatch.setattr(webhooks, "apply_provider_events", dies)
    with pytest.raises(RuntimeError):
        webhooks.apply_batch(first.id, more=1)
    db.session.rollback()
    assert applied(first, second) == [False, False]  # the first email's events are stored, though
    monkeypatch.undo()
    assert webhooks.unapplied_batches(utcnow() + timedelta(minutes=1)) == [first.id, second.id]
    assert webhooks.apply_batch(first.id, more=1) == 1  # the first email's event is already stored
    assert applied(first, second) == [True, True]
    db.session.expire_all()
    assert [db.session.get(Email, email.id).status for email in emails] == ["delivered", "delivered"]
    assert db.session.execute(sa.select(sa.func.count(EmailEvent.id))).scalar() == 2
