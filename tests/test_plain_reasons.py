"""What the provider said, in plain words: a full mailbox, an address that does not exist, Postmark's
own description when a server's answer is bare, SendGrid's raw answers, and the receiving server's
answer on the Delivered line; from real-shaped payloads through the real adapters."""

from __future__ import annotations

import json
from datetime import timedelta
from html import unescape
from pathlib import Path

import pytest

from tests.helpers import add_email, login, row_html, timeline_html
from tests.helpers import text as markup_text
from webapp import bounce_reasons
from webapp.extensions import db
from webapp.models import utcnow
from webapp.providers.base import PollRef, ProviderEvent
from webapp.providers.postmark import parse_webhook_event
from webapp.providers.sendgrid import parse_webhook_events
from webapp.services import deliverability, timelines
from webapp.services.events import apply_events

FIXTURES = Path(__file__).parent / "fixtures"
FULL = "the client's mailbox is full"
NO_SUCH = "the address does not exist"


def text(html: str) -> str:
    """The words a reader sees, entities read."""
    return unescape(markup_text(html))


def postmark(name: str, **changes) -> dict:
    document = json.loads((FIXTURES / "postmark" / name).read_text())
    return {**{key: value for key, value in document.items() if not key.startswith("_")}, **changes}


def anymail_case(name: str) -> dict:
    shapes = json.loads((FIXTURES / "postmark" / "anymail_webhook_shapes.json").read_text())
    return next(case["payload"] for case in shapes["cases"] if case["name"] == name)


def sendgrid_bounce(reason: str, status: str = "5.0.0", kind: str = "bounce") -> dict:
    """A bounce as SendGrid's Event Webhook reference shows it (its example says "500 unknown recipient")."""
    return {
        "email": "example@test.com",
        "timestamp": 1513299569,
        "smtp-id": "<14c5d75ce93.dfd.64b469@ismtpd-555>",
        "event": "bounce",
        "category": "cat facts",
        "sg_event_id": "6g4ZI7SA-xmRDv57GoPIPw==",
        "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0",
        "reason": reason,
        "status": status,
        "type": kind,
    }


@pytest.mark.parametrize(
    ("said", "key"),
    [
        ("smtp;550 5.1.1 The email account that you tried to reach does not exist.", "no_such_address"),
        ("500 unknown recipient", "no_such_address"),  # SendGrid's documented example
        (
            "550 5.1.1 <a@testing.com>: Recipient address rejected: User unknown in virtual alias table",
            "no_such_address",
        ),
        (
            "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
            "no_such_address",
        ),
        (
            "554 delivery error: dd This user doesn't have a yahoo.com account (x@yahoo.com) [0]",
            "no_such_address",
        ),
        ("Mailbox is full", "mailbox_full"),
        ("smtp;452 4.2.2 The email account that you tried to reach is over quota.", "mailbox_full"),
        ("552 5.2.2 Mailbox full", "mailbox_full"),
        ("452 Insufficient system storage", "mailbox_full"),  # RFC 5321's words for 452
        ("552 Requested mail action aborted: exceeded storage allocation", "mailbox_full"),
        ("450 4.2.2 The email account that you tried to reach is over quota", "mailbox_full"),
        ("552 5.3.4 Message size exceeds fixed limit", None),  # 552 with another enhanced code
        ("452 4.5.3 Too many recipients", None),
        ("550 5.7.1 Message rejected as spam", None),
        ("action: failed", None),
        # A provider's list of examples is no diagnosis.
        ("Unable to temporarily deliver message (i.e. mailbox full, account disabled, exceeds quota).", None),
    ],
)
def test_server_answers_map_to_plain_reasons(said, key):
    plain = bounce_reasons.classify(said)
    assert (plain.key if plain else None) == key


def test_a_full_mailbox_is_named_with_advice_that_the_address_is_right():
    for said in (
        "Mailbox is full",
        "smtp;452 4.2.2 over quota",
        "552 5.2.2 Mailbox full",
        "452 4.2.2",
        "552",
    ):
        words = bounce_reasons.failure_words(said)
        assert words.startswith(FULL) and "the address is right" in words and "try again later" in words
        assert "call the client" in words


def test_postmark_hard_bounce_reads_as_an_unknown_address_without_postmarks_type_name():
    [event] = parse_webhook_event(json.dumps(anymail_case("bounce")).encode())
    assert event.kind == "bounce" and "HardBounce" not in event.reason
    words = bounce_reasons.failure_words(event.reason, event.reject_reason)
    assert words.startswith(NO_SUCH) and "HardBounce" not in words and "smtp;" not in words


def test_postmarks_description_stands_in_for_a_bare_answer():
    payload = postmark("webhook_bounce.json", Details="action: failed")
    [event] = parse_webhook_event(json.dumps(payload).encode())
    assert event.reason == payload["Description"]
    # A hard bounce whose server gave no reason: the address does not exist, in plain words.
    assert bounce_reasons.failure_words(event.reason, event.reject_reason).startswith(NO_SUCH)
    soft = postmark(
        "webhook_bounce.json",
        Type="SoftBounce",
        TypeCode=4096,
        Details="smtp;452 4.2.2 The email account that you tried to reach is over quota.",
    )
    [event] = parse_webhook_event(json.dumps(soft).encode())
    assert event.reason == soft["Details"]
    assert bounce_reasons.failure_words(event.reason, event.reject_reason).startswith(FULL)


def test_sendgrids_raw_answers_map_to_the_same_plain_reasons():
    body = json.dumps(
        [
            sendgrid_bounce("500 unknown recipient"),
            {**sendgrid_bounce("552 5.2.2 Mailbox full", "5.2.2"), "sg_event_id": "b2"},
            {**sendgrid_bounce("452 4.2.2 Over quota", "4.2.2", "blocked"), "sg_event_id": "b3"},
        ]
    ).encode()
    unknown, full, blocked = parse_webhook_events(body)
    assert bounce_reasons.failure_words(unknown.reason).startswith(NO_SUCH)
    assert bounce_reasons.failure_words(full.reason).startswith(FULL)
    assert bounce_reasons.failure_words(blocked.reason).startswith(FULL)


def _failed_with(world, reason: str, reject_reason: str | None = None):
    return add_email(
        world.client_a,
        events=[(5, "processed", {}), (20, "bounce", {"reason": reason, "reject_reason": reject_reason})],
    )


def test_the_log_row_banner_and_timeline_say_a_full_mailbox_plainly(app, world, client):
    email = _failed_with(world, "smtp;552 5.2.2 Mailbox full")
    login(client, "clinician@a.example")
    page = client.get(f"/clients/{world.client_a.id}").get_data(as_text=True)
    row = text(row_html(page, email))
    assert f"Not delivered: {FULL} (the address is right: try again later" in row
    banner = text(page.split('id="client-banner"', 1)[1].split("</section>", 1)[0])
    assert FULL in banner and "The address is right" in banner and "spelled correctly" not in banner
    timeline = text(timeline_html(client, email))
    assert f"Bounced {FULL} (552 5.2.2 Mailbox full)" in timeline and "smtp;" not in timeline


def test_needs_attention_says_the_address_is_right_for_a_full_mailbox(app, world, client):
    _failed_with(world, "452 4.2.2 over quota")
    login(client, "clinician@a.example")
    page = text(client.get("/attention").get_data(as_text=True))
    assert f"not delivered: {FULL}" in page
    assert "the address is right: resend it later" in page and "spelled correctly" not in page


def test_an_unknown_address_reads_plainly_everywhere(app, world, client):
    email = _failed_with(world, "smtp;550 5.1.1 The email account that you tried to reach does not exist.")
    login(client, "clinician@a.example")
    row = text(row_html(client.get(f"/clients/{world.client_a.id}").get_data(as_text=True), email))
    assert f"Not delivered: {NO_SUCH} (check it with the client" in row
    assert "HardBounce" not in row and "550" not in row  # the server's code stays on the timeline
    assert "550 5.1.1" in text(timeline_html(client, email))


def test_the_owners_failure_reasons_use_the_same_words(app, world):
    _failed_with(world, "500 unknown recipient")
    _failed_with(world, "Mailbox is full")
    _failed_with(
        world, "The server was unable to deliver your message (ex: unknown user).", "bounced_address"
    )
    now = utcnow() + timedelta(minutes=1)
    reasons = dict(deliverability.overview(world.clinic_a.id, now).reasons)
    assert reasons == {"The address does not exist": 2, "The client's mailbox is full": 1}


def test_the_delivered_line_shows_the_receiving_servers_answer_for_postmark(app, world, client):
    """The Delivery webhook's Details, and the Messages API's DeliveryMessage, as SendGrid's `response`."""
    email = add_email(world.client_a, events=[(5, "processed", {})])
    delivery = anymail_case("delivered with a -05:00 offset")
    [webhook] = parse_webhook_event(json.dumps(delivery).encode())
    polled_answer = "smtp;250 2.0.0 OK l10si21599969igu.63 - gsmtp"
    polled = ProviderEvent(
        "delivered",
        webhook.occurred_at + timedelta(seconds=5),
        reason=polled_answer,
        raw={"Type": "Delivered", "Details": {"DeliveryMessage": polled_answer}},
    )
    for event in (webhook, polled):
        event = ProviderEvent(**{**event.__dict__, "app_message_id": email.app_message_id})
        apply_events(email, [event], source="webhook")
    db.session.commit()
    login(client, "clinician@a.example")
    lines = [text(line) for line in timeline_html(client, email).split("<li>")[1:]]
    delivered = [line for line in lines if "Delivered to the receiving server" in line]
    assert delivered[0].endswith("Delivered to the receiving server 250 2.0.0 OK")
    assert delivered[1].endswith("Delivered to the receiving server 250 2.0.0 OK l10si21599969igu.63 - gsmtp")


def test_the_poll_reads_the_delivery_message_as_the_answer():
    from webapp.providers.postmark import _detail_events

    detail = json.loads((FIXTURES / "postmark" / "messages_outbound_details.json").read_text())
    events = list(_detail_events(detail, PollRef("msg-1", detail["MessageID"])))
    [delivered] = [event for event in events if event.kind == "delivered"]
    timeline = timelines.build_timeline([_Row(delivered)])
    assert timeline[0].detail == "250 2.0.0 OK l10si21599969igu.63 - gsmtp"


class _Row:
    """A stored event as build_timeline reads it."""

    def __init__(self, event: ProviderEvent) -> None:
        self.kind, self.occurred_at, self.reason = event.kind, event.occurred_at, event.reason
        self.reject_reason, self.url, self.attempt, self.machine = event.reject_reason, None, None, False
        self.raw, self.dedupe_key = event.raw, event.dedupe_key


def test_rows_stored_with_postmarks_type_name_read_without_it(app, world, client):
    """Before this change the Postmark adapter stored "… (HardBounce)": such rows read the same."""
    email = _failed_with(
        world, "smtp;550 5.1.1 The email account does not exist. (HardBounce)", "bounced_address"
    )
    login(client, "clinician@a.example")
    timeline = text(timeline_html(client, email))
    assert f"Bounced {NO_SUCH} (550 5.1.1 The email account does not exist.)" in timeline
    assert "HardBounce" not in timeline
