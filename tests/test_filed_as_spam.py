"""A late "filtered as spam" notice (Postmark's SpamNotification bounce) after Delivered and Open: the
email keeps its status; its timeline, its log row and the help say the client's mail server filed it
as spam and what the client can do. Replayed in every order, from Postmark's payload shapes, and
played by the sandbox through the real adapter and the real webhook route."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta
from html import unescape
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.helpers import add_content, htmx_get, login, row_html, run_jobs, timeline_html
from tests.helpers import text as markup_text
from webapp import statuses
from webapp.extensions import db
from webapp.models import Client, Email, EmailEvent, SpamListEntry
from webapp.providers.postmark.webhooks import parse_webhook_event
from webapp.services import sending, timelines
from webapp.services.events import apply_events

FIXTURES = Path(__file__).parent / "fixtures" / "postmark"
# Yesterday, so the client file's 30 days show it.
T0 = (datetime.now(UTC) - timedelta(days=1)).replace(microsecond=0)
LINE = "Filed as spam by the client's mail server"
ADVICE = "ask Jane Doe to look in their spam folder and mark it as not spam"


def text(html: str) -> str:
    return unescape(markup_text(html))


def record(name: str, email: Email, **changes) -> dict:
    document = json.loads((FIXTURES / name).read_text())
    payload = {key: value for key, value in document.items() if not key.startswith("_")}
    return {**payload, "Metadata": {"app_message_id": email.app_message_id}, **changes}


def stamp(seconds: float) -> str:
    """A time as Postmark writes it (seven fractional digits, an offset)."""
    moment = (T0 + timedelta(seconds=seconds)).astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.1234567+00:00")


def new_email(world) -> Email:
    email = Email(
        clinic_id=world.clinic_a.id,
        client_id=world.client_a.id,
        to_address=world.client_a.email,
        subject="Appointment reminder",
        body="See you soon",
        kind="appointment_reminder",
        provider="postmark",
        send_state="accepted",
        created_at=T0,
        status_changed_at=T0,
    )
    db.session.add(email)
    db.session.commit()
    return email


def the_three(email: Email) -> dict[str, bytes]:
    """Delivery, Open and SpamNotification records of one email, as Postmark posts them."""
    return {
        "delivered": json.dumps(record("webhook_delivery.json", email, DeliveredAt=stamp(3))).encode(),
        "open": json.dumps(record("webhook_open.json", email, ReceivedAt=stamp(60))).encode(),
        "filtered": json.dumps(
            record("webhook_spam_notification.json", email, BouncedAt=stamp(300))
        ).encode(),
    }


@pytest.mark.parametrize("order", list(itertools.permutations(["delivered", "open", "filtered"])))
def test_delivered_open_and_a_late_spam_notice_in_any_order_stay_open(app, world, client, order):
    email = new_email(world)
    bodies = the_three(email)
    for name in order:  # one webhook at a time, as they arrive
        apply_events(email, parse_webhook_event(bodies[name]), source="webhook")
        db.session.commit()
    db.session.refresh(email)
    assert email.status == statuses.OPEN.key
    assert email.status_changed_at == T0 + timedelta(seconds=60, microseconds=123456)  # the first open
    assert db.session.execute(sa.select(sa.func.count(SpamListEntry.id))).scalar() == 0

    timeline = timelines.email_timeline(world.clinic_a.id, email.id, T0 + timedelta(hours=1))
    labels = [line[3] for line in timeline.lines]
    assert labels == ["Delivered to the receiving server", "Opened", LINE]
    # Postmark's own description, since the server's notice was bare ("action: failed").
    assert timeline.lines[-1][4].startswith("The message was delivered, but was either blocked by the user")

    login(client, "clinician@a.example")
    page = client.get(f"/clients/{world.client_a.id}").get_data(as_text=True)
    row = text(row_html(page, email))
    assert "Open (what this status means)" in row
    assert f"The client's mail server filed this email as spam: {ADVICE}" in row
    assert "Not delivered" not in row and "Resend…" not in row and "Failed" not in row

    panel = client.get(f"/help/statuses/open?email={email.id}", headers={"HX-Request": "true"})
    words = text(panel.get_data(as_text=True))
    assert f"The client's mail server filed this email as spam: {ADVICE}" in words
    assert "typo" not in words


def test_a_spam_notice_alone_proves_delivery_not_failure(app, world):
    """Postmark: "delivered, but … classified as spam" (the Delivery webhook is optional)."""
    email = new_email(world)
    apply_events(email, parse_webhook_event(the_three(email)["filtered"]), source="webhook")
    db.session.commit()
    db.session.refresh(email)
    assert email.status == statuses.DELIVERED.key
    assert [event.kind for event in email.events] == ["spam_filtered"]


def test_the_help_guide_says_what_to_do_about_a_spam_notice(app, world, client):
    login(client, "clinician@a.example")
    for key in ("delivered", "open", "clicked"):
        words = text(client.get(f"/help/statuses/{key}").get_data(as_text=True))
        assert (
            "If the client's mail server says it filed the email as spam, the status stays as it is" in words
        )
        assert "ask the client to look in their spam folder and mark it as not spam" in words


def test_a_row_without_the_notice_is_unchanged(app, world, client):
    """Only the email the server filed as spam carries the notice."""
    filed, plain = new_email(world), new_email(world)
    apply_events(filed, parse_webhook_event(the_three(filed)["filtered"]), source="webhook")
    apply_events(plain, parse_webhook_event(the_three(plain)["delivered"]), source="webhook")
    db.session.commit()
    login(client, "clinician@a.example")
    page = client.get(f"/clients/{world.client_a.id}").get_data(as_text=True)
    assert "filed this email as spam" in text(row_html(page, filed))
    assert "filed this email as spam" not in text(row_html(page, plain))
    assert LINE in text(timeline_html(client, filed))


def test_the_resend_page_warns_that_a_copy_would_be_filed_as_spam_too(app, world, client):
    email = new_email(world)
    bodies = the_three(email)
    for name in ("delivered", "filtered"):
        apply_events(email, parse_webhook_event(bodies[name]), source="webhook")
    db.session.commit()
    login(client, "clinician@a.example")
    words = text(client.post(f"/emails/{email.id}/resend").get_data(as_text=True))
    assert f"The client's mail server filed this email as spam: {ADVICE}" in words
    assert "A resend would most likely be filed as spam too." in words


@pytest.mark.parametrize("wire_format", ["postmark"])
def test_the_postmark_sandbox_plays_the_sequence_through_the_webhook_route(
    app, world, app_clock, wire_format
):
    """jane+spam-filtered@…: delivered, opened, then the server's SpamNotification; posted by the
    sandbox to /webhooks/postmark/events, applied by the job, shown on the client file."""
    from webapp.providers import get_sandbox

    patient = Client(clinic_id=world.clinic_a.id, name="Jane Doe", email="jane+spam-filtered@example.com")
    db.session.add(patient)
    db.session.commit()
    email = sending.queue_email(patient, kind="receipt", subject="Your receipt", body="-", sent_by=None)
    add_content(email)  # its HTML part: the open is a pixel in it
    db.session.commit()
    run_jobs(app)
    app_clock.advance(120)
    http = app.test_client()
    posted: list[dict] = []

    def post(body: bytes, headers: dict[str, str]) -> int:
        posted.append(json.loads(body))
        return http.post("/webhooks/postmark/events", data=body, headers=headers).status_code

    assert get_sandbox(app.config).deliver_webhooks(post=post) == 3
    run_jobs(app)
    assert [(item["RecordType"], item.get("Type")) for item in posted] == [
        ("Delivery", None),
        ("Open", None),
        ("Bounce", "SpamNotification"),  # no SubscriptionChange: the address stays active
    ]
    db.session.expire_all()
    stored = db.session.get(Email, email.id)
    assert stored.status == statuses.OPEN.key
    kinds = db.session.execute(
        sa.select(EmailEvent.kind).where(EmailEvent.email_id == email.id).order_by(EmailEvent.occurred_at)
    ).scalars()
    assert list(kinds) == ["sending", "processed", "delivered", "open", "spam_filtered"]
    login(http, "clinician@a.example")
    row = text(row_html(http.get(f"/clients/{patient.id}").get_data(as_text=True), stored))
    assert (
        "The client's mail server filed this email as spam: ask Jane Doe to look in their spam folder" in row
    )
    # The address is not blocked: the next email goes.
    assert sending.spam_list_entry(patient.email) is None


def test_the_log_reads_the_notice_with_its_rows(app, world, client):
    """A row shown before the notice shows it once it arrives (a kept row is not served), and the
    log reads it in its rows' statement rather than in one of its own."""
    email = new_email(world)
    apply_events(email, parse_webhook_event(the_three(email)["delivered"]), source="webhook")
    db.session.commit()
    login(client, "clinician@a.example")
    log_url = f"/clients/{world.client_a.id}/emails"
    before = htmx_get(client, log_url).get_data(as_text=True)
    assert "filed this email as spam" not in text(row_html(before, email))

    apply_events(email, parse_webhook_event(the_three(email)["filtered"]), source="webhook")
    db.session.commit()
    statements: list[str] = []

    def on_sql(conn, cursor, statement, parameters, context, executemany) -> None:
        statements.append(statement)

    sa.event.listen(db.engine, "before_cursor_execute", on_sql)
    try:
        page = htmx_get(client, log_url).get_data(as_text=True)
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", on_sql)
    assert f"The client's mail server filed this email as spam: {ADVICE}" in text(row_html(page, email))
    reading_events = [statement for statement in statements if "email_event" in statement]
    assert len(reading_events) == 1 and "email.subject" in reading_events[0]
