"""The same journeys with each of the sandbox's wire formats (SendGrid's and Postmark's), through the
worker, the real adapter, polling and the client file: every status, a spam report that blocks the
address, and a resend of a failed email to a corrected address."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from tests.helpers import (
    HTML_WITH_LINK,
    HTML_WITHOUT_LINK,
    INTAKE_LINK,
    WIRE_FORMATS,
    add_content,
    login,
    run_jobs,
)
from webapp.extensions import db
from webapp.models import Client, Email, utcnow
from webapp.providers import get_provider
from webapp.services import polling, sending

SCENARIOS = {
    "delivered": "delivered",
    "deferred": "delivered",
    "bounced": "failed",
    "machine-open": "open",
    "clicked": "clicked",
    "spam": "spam-report",
    "spam-filtered": "open",  # Postmark's late SpamNotification keeps it Open; SendGrid reports none
    "stuck": "processed",
}


def send_to(world, address: str, name: str, html: str | None = HTML_WITH_LINK) -> Email:
    """Queue an email with an HTML part (as the product sends them), or text only (html=None)."""
    client = Client(clinic_id=world.clinic_a.id, name=name, email=address)
    db.session.add(client)
    db.session.commit()
    email = sending.queue_email(client, kind="receipt", subject=f"Receipt for {name}", body="-", sent_by=None)
    if html is not None:
        add_content(email, html=html)
        db.session.commit()
    return email


def poll_until_quiet(app_clock) -> None:
    """Let the sandbox's simulated seconds pass, then poll until nothing is due."""
    for _ in range(10):
        app_clock.advance(60)
        if polling.poll_due() == 0 and not polling.due_for_poll(utcnow(), 100):
            return


@pytest.mark.parametrize("wire_format", WIRE_FORMATS)
def test_every_status_is_reached_by_polling(app, world, app_clock, wire_format):
    assert get_provider(app.config).name == wire_format
    emails = {scenario: send_to(world, f"pat+{scenario}@example.com", scenario) for scenario in SCENARIOS}
    run_jobs(app)
    db.session.expire_all()
    assert {db.session.get(Email, e.id).send_state for e in emails.values()} == {"accepted"}
    poll_until_quiet(app_clock)
    db.session.expire_all()
    assert {name: db.session.get(Email, e.id).status for name, e in emails.items()} == SCENARIOS
    for email in emails.values():
        # Postmark's acceptance and its Messages API's record are one event, not two.
        assert [event.kind for event in db.session.get(Email, email.id).events].count("processed") == 1
    failed = db.session.get(Email, emails["bounced"].id)
    assert "does not exist" in next(event.reason for event in failed.events if event.kind == "bounce")


@pytest.mark.parametrize("wire_format", WIRE_FORMATS)
def test_opens_and_clicks_come_only_where_the_provider_can_track_them(app, world, app_clock, wire_format):
    """The providers' rules: an open is a pixel in the HTML part, a click a rewritten link of it.
    To the same scenarios, an HTML email with a link reaches Open and Clicked, one without a link
    Open only, and a text-only one never either (it stops at Delivered, or goes on to its spam
    report); by polling, then by every webhook the sandbox posts."""
    from webapp.providers import get_sandbox

    emails = {
        ("clicked", "link"): send_to(world, "ann+clicked@example.com", "Ann"),
        ("clicked", "no link"): send_to(world, "bo+clicked@example.com", "Bo", html=HTML_WITHOUT_LINK),
        ("clicked", "text"): send_to(world, "cy+clicked@example.com", "Cy", html=None),
        ("machine-open", "text"): send_to(world, "di+machine-open@example.com", "Di", html=None),
        ("spam", "text"): send_to(world, "ed+spam@example.com", "Ed", html=None),
    }
    wanted = {
        ("clicked", "link"): ("clicked", ["delivered", "open", "click"]),
        ("clicked", "no link"): ("open", ["delivered", "open"]),
        ("clicked", "text"): ("delivered", ["delivered"]),
        ("machine-open", "text"): ("delivered", ["delivered"]),
        ("spam", "text"): ("spam-report", ["delivered", "spamreport"]),
    }

    def reached() -> dict:
        db.session.expire_all()
        found = {}
        for key, email in emails.items():
            email = db.session.get(Email, email.id)
            # (Postmark follows a spam complaint with a SubscriptionChange: "unknown" to us.)
            kinds = [e.kind for e in email.events if e.kind not in ("sending", "processed", "unknown")]
            found[key] = (email.status, kinds)
        return found

    run_jobs(app)
    poll_until_quiet(app_clock)
    assert reached() == wanted
    (click,) = [event for event in db.session.get(Email, emails["clicked", "link"].id).events if event.url]
    assert click.url == INTAKE_LINK  # a link of that email's own HTML part

    http = app.test_client()
    assert get_sandbox(app.config).deliver_webhooks(
        post=lambda body, headers: (
            http.post(f"/webhooks/{wire_format}/events", data=body, headers=headers).status_code
        )
    )
    run_jobs(app)
    assert reached() == wanted  # the webhooks tell the same: no open or click where none could be


@pytest.mark.parametrize("wire_format", WIRE_FORMATS)
def test_a_spam_report_blocks_the_address_everywhere(app, world, app_clock, wire_format):
    reported = send_to(world, "sam+spam@example.com", "Sam")
    run_jobs(app)
    poll_until_quiet(app_clock)
    db.session.refresh(reported)
    assert reported.status == "spam-report"
    assert sending.spam_list_entry("sam+spam@example.com") is not None
    with pytest.raises(sending.SendRefused):
        sending.queue_email(reported.client, kind="receipt", subject="Again", body="-", sent_by=None)
    clinician = app.test_client()
    login(clinician, "clinician@a.example")
    page = clinician.get(f"/clients/{reported.client_id}").get_data(as_text=True)
    assert "Emails to this address are blocked" in page and "Sam reported the email" in page


@pytest.mark.parametrize("wire_format", WIRE_FORMATS)
def test_a_failed_email_is_resent_to_a_corrected_address_and_delivered(app, world, app_clock, wire_format):
    failed = send_to(world, "kim+bounced@example.com", "Kim")
    run_jobs(app)
    poll_until_quiet(app_clock)
    db.session.refresh(failed)
    assert failed.status == "failed"
    clinician = app.test_client()
    login(clinician, "clinician@a.example")
    response = clinician.post(
        f"/emails/{failed.id}/resend",
        data={"confirm": "yes", "to_address": "kim+delivered@example.com", "update_client": "y"},
    )
    assert response.status_code == 303
    run_jobs(app)
    poll_until_quiet(app_clock)
    resent = db.session.execute(sa.select(Email).where(Email.resend_of_id == failed.id)).scalar_one()
    assert (resent.to_address, resent.send_state, resent.status) == (
        "kim+delivered@example.com",
        "accepted",
        "delivered",
    )


@pytest.mark.parametrize("wire_format", WIRE_FORMATS)
def test_every_status_is_reached_by_the_webhooks_the_sandbox_posts(app, world, app_clock, wire_format):
    """Through the real route (/webhooks/<wire format>/events): verified, stored, applied by a job;
    replayed shuffled and duplicated, nothing changes."""
    import random

    from webapp.models import EmailEvent
    from webapp.providers import get_sandbox

    emails = {scenario: send_to(world, f"pat+{scenario}@example.com", scenario) for scenario in SCENARIOS}
    run_jobs(app)
    app_clock.advance(120)
    http = app.test_client()
    url = f"/webhooks/{wire_format}/events"
    posted: list[tuple[bytes, dict[str, str]]] = []

    def post(body: bytes, headers: dict[str, str]) -> int:
        posted.append((body, headers))
        return http.post(url, data=body, headers=headers).status_code

    assert get_sandbox(app.config).deliver_webhooks(post=post) > 0
    run_jobs(app)
    db.session.expire_all()
    reached = {name: db.session.get(Email, e.id).status for name, e in emails.items()}
    # Postmark posts no "processed": its acceptance, recorded at send time, stands for it.
    assert reached == SCENARIOS
    stored = db.session.execute(sa.select(sa.func.count(EmailEvent.id))).scalar()

    replay = [item for item in posted for _ in range(random.Random(3).randint(1, 3))]
    random.Random(7).shuffle(replay)
    for body, headers in replay:
        assert http.post(url, data=body, headers=headers).status_code == 200
    run_jobs(app)
    db.session.expire_all()
    assert {name: db.session.get(Email, e.id).status for name, e in emails.items()} == reached
    assert db.session.execute(sa.select(sa.func.count(EmailEvent.id))).scalar() == stored

    body, headers = posted[0]
    assert http.post(url, data=body, headers={"Content-Type": "application/json"}).status_code == 403
    other = "postmark" if wire_format == "sendgrid" else "sendgrid"
    assert http.post(f"/webhooks/{other}/events", data=body, headers=headers).status_code == 404


@pytest.mark.parametrize("wire_format", ["postmark"])
def test_hostile_postmark_webhook_bodies_get_a_4xx_never_a_500(app, wire_format):
    from webapp.providers import get_sandbox

    sandbox = get_sandbox(app.config)
    import base64

    token = base64.b64encode(f"{sandbox.webhook_username}:{sandbox.webhook_password}".encode()).decode()
    headers = {"Authorization": f"Basic {token}", "Content-Type": "application/json"}
    http = app.test_client()
    bodies = [
        b"",
        b"null",
        b"[]",
        b"{}",
        b'{"RecordType": "Delivery", "DeliveredAt": "9999-12-31T23:59:59-05:00"}',
        b'{"RecordType": "Bounce", "Type": "HardBounce", "BouncedAt": ["x"]}',
        b'{"RecordType": "Click", "ReceivedAt": "2024-08-05T02:03:37.0951168Z",'
        b' "Metadata": {"app_message_id": {"a": 1}}}',
        b'{"RecordType": "Open", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        b"\xff\xfe",
    ]
    for body in bodies:
        status = http.post("/webhooks/postmark/events", data=body, headers=headers).status_code
        assert 200 <= status < 500, (body[:60], status)
    assert (
        http.post(
            "/webhooks/postmark/events", data=b"{}", headers={**headers, "Authorization": "Basic eDp5"}
        ).status_code
        == 403
    )
