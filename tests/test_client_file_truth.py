"""The client file tells the truth (issue 11): the spam list, the banner, the address-health mark
and the send form agree with the log, in the demo and everywhere else, and change together."""

from __future__ import annotations

import html as entities
import re
import time
from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from tests.helpers import BOUNCED, CLINICIAN, DELIVERED, PASSWORD, add_email, htmx_get, login, poll_url, text
from webapp import statuses
from webapp.extensions import db
from webapp.models import Client, Email, SpamListEntry, utcnow
from webapp.providers.base import ProviderEvent
from webapp.services.events import add_to_spam_list, apply_events


@pytest.fixture
def signed_in_jane(client, world):
    login(client, CLINICIAN)
    return client, world.client_a


BLOCKED = "Emails to this address are blocked"
SPAM_REPORTED = [*DELIVERED, (3600, "spamreport", {})]


def health_marks(html: str) -> dict[str, str]:
    """Return each listed client's address-health mark, by name."""
    marks = re.findall(r'class="client-name"[^>]*>([^<]+)</a>.*?class="health health-(\w+)"', html, re.S)
    return {entities.unescape(name): mark for name, mark in marks}


def actions(html: str) -> str:
    """Return the header's address-health mark and "Send email" link."""
    match = re.search(r'<div id="client-actions"[^>]*>(.*?)</div>', html, re.S)
    assert match, "no #client-actions"
    return match.group(0)


def send_form(html: str) -> str:
    match = re.search(r'<section id="send-email"[^>]*>.*?</section>', html, re.S)
    assert match, "no #send-email"
    return match.group(0)


# --- 1. Demo data agrees with itself -------------------------------------------------------------


def test_demo_clients_whose_log_shows_a_spam_report_are_blocked_everywhere(app, client):
    from webapp.providers import get_provider
    from webapp.services import demo, log_rows, maintenance

    demo.seed(PASSWORD)
    # The scheduler copies the provider's list into ours: it must not unblock anyone.
    maintenance.sync_spam_list()
    login(client, "clinician@example.com")
    listing = health_marks(client.get("/clients").get_data(as_text=True))
    provider_list = {address for address, _ in get_provider(app.config).spam_reports()}
    demo_clients = db.session.execute(sa.select(Client).order_by(Client.id)).scalars().all()
    reported_names = set()
    for person in demo_clients:
        rows = log_rows.email_log(person.clinic_id, person.id, None, utcnow())
        reported = any(
            row.status == statuses.SPAM_REPORT and row.email.to_address.lower() == person.email.lower()
            for row in rows
        )
        page = client.get(f"/clients/{person.id}").get_data(as_text=True)
        if reported:
            reported_names.add(person.name)
            assert listing[person.name] == "spam", person.name
            assert person.email.lower() in provider_list, person.name
            assert BLOCKED in page and "On the spam list" in actions(page), person.name
            assert 'href="#send-email"' not in actions(page)
            assert "Sending is not possible" in send_form(page)
            refused = client.post(
                f"/clients/{person.id}/emails",
                data={
                    "kind": "receipt",
                    "lines-0-service": "Massage",
                    "lines-0-day": "2026-03-02",
                    "lines-0-amount": "80.00",
                },
            )
            assert refused.status_code == 422, person.name
        else:
            assert BLOCKED not in page, person.name
            assert listing[person.name] != "spam", person.name
            assert f'action="/clients/{person.id}/emails"' in send_form(page)
    assert {"Olivia Brown", "Marco Rossi"} <= reported_names


def test_a_spam_report_to_another_clinic_refreshes_this_clinics_open_file(app, client, world):
    login(client, CLINICIAN)
    jane = world.client_a
    url = poll_url(client.get(f"/clients/{jane.id}").get_data(as_text=True))
    elsewhere = Client(clinic_id=world.clinic_b.id, name="Jane at B", email=jane.email.upper())
    db.session.add(elsewhere)
    db.session.commit()
    add_email(elsewhere, events=SPAM_REPORTED)

    changed = htmx_get(client, url)
    assert changed.status_code == 200
    assert BLOCKED in changed.get_data(as_text=True)
    assert "Blocked" in actions(changed.get_data(as_text=True))


def test_an_address_taken_off_the_providers_list_refreshes_open_files(app, client, world):
    from webapp.services import maintenance

    login(client, CLINICIAN)
    jane = world.client_a
    add_to_spam_list(jane.email, utcnow(), None, "webhook")
    db.session.commit()
    page = client.get(f"/clients/{jane.id}").get_data(as_text=True)
    assert BLOCKED in page
    maintenance.sync_spam_list()  # the sandbox never had it

    changed = htmx_get(client, poll_url(page))
    assert changed.status_code == 200
    assert BLOCKED not in changed.get_data(as_text=True)
    assert 'href="#send-email"' in actions(changed.get_data(as_text=True))


# --- 2. The spam banner names the reported email and the date of the report ----------------------


def test_the_banner_names_the_reported_email_not_a_later_dropped_one(signed_in_jane):
    client, jane = signed_in_jane
    now = utcnow()
    reported = add_email(
        jane, sent_at=now - timedelta(days=6), subject="Your intake form", events=SPAM_REPORTED
    )
    # Our copy of the list lost the entry (a sync), then a later send was dropped for it.
    db.session.execute(sa.delete(SpamListEntry))
    db.session.commit()
    add_email(
        jane,
        sent_at=now - timedelta(hours=1),
        subject="Your receipt",
        events=[
            (5, "processed", {}),
            (30, "dropped", {"reason": "Spam Reporting Address", "reject_reason": "spam_report"}),
        ],
    )

    html = client.get(f"/clients/{jane.id}").get_data(as_text=True)
    banner = text(html[html.index('class="banner banner-danger"') : html.index('id="email-log"')])
    report_day = (reported.created_at + timedelta(seconds=3600)).strftime("%d %b %Y")
    assert f"Jane Doe reported the email “Your intake form” as spam on {report_day}." in banner
    assert "Your receipt" not in banner
    assert (now - timedelta(hours=1)).strftime("%d %b %Y") not in banner or report_day in banner
    assert f'href="#email-{reported.id}"' in html


def test_a_block_known_only_from_a_dropped_send_does_not_invent_a_report_date(signed_in_jane):
    client, jane = signed_in_jane
    dropped = add_email(
        jane,
        sent_at=utcnow() - timedelta(days=2),
        subject="Your receipt",
        events=[
            (5, "processed", {}),
            (30, "dropped", {"reason": "Spam Reporting Address", "reject_reason": "spam_report"}),
        ],
    )
    html = client.get(f"/clients/{jane.id}").get_data(as_text=True)
    banner = text(html[html.index('class="banner banner-danger"') : html.index('id="email-log"')])
    # Known only from a refused send, the block may stem from another clinic's report: the banner
    # says only that the address is blocked (tests/test_security_disclosure.py), and no date.
    assert "Our email provider does not deliver to" in banner
    assert "reported" not in banner and dropped.created_at.strftime("%d %b %Y") not in banner
    assert "Your receipt" not in banner


def test_a_sync_dates_the_block_by_the_providers_report(app, world):
    from webapp.providers import get_sandbox
    from webapp.services import maintenance
    from webapp.services.address_health import address_health

    jane = world.client_a
    reported_on = utcnow() - timedelta(days=9)
    get_sandbox(app.config).add_spam_report(jane.email, reported_on.timestamp())
    add_email(
        jane,
        sent_at=utcnow() - timedelta(hours=2),
        events=[
            (5, "processed", {}),
            (30, "dropped", {"reason": "Spam Reporting Address", "reject_reason": "spam_report"}),
        ],
    )
    maintenance.sync_spam_list()
    health = address_health([jane], utcnow())[jane.id]
    assert health.blocked
    assert int(health.listed_at.timestamp()) == int(reported_on.timestamp())


# --- 4. Everything that depends on the log changes in the same refresh ---------------------------


def test_a_spam_report_while_the_file_is_open_changes_banner_mark_and_form_in_one_refresh(signed_in_jane):
    client, jane = signed_in_jane
    email = add_email(jane, events=DELIVERED)
    page = client.get(f"/clients/{jane.id}").get_data(as_text=True)
    assert "Fine" in actions(page) and 'href="#send-email"' in actions(page)
    url = poll_url(page)

    apply_events(
        email, [ProviderEvent("spamreport", utcnow(), app_message_id=email.app_message_id)], "webhook"
    )
    db.session.commit()
    html = htmx_get(client, url).get_data(as_text=True)
    assert re.search(r'class="badge badge-danger"[^>]*>Spam report<', html)
    assert '<div id="client-banner" hx-swap-oob="true">' in html and BLOCKED in html
    mark = actions(html)
    assert 'hx-swap-oob="true"' in mark and "On the spam list" in mark and 'href="#send-email"' not in mark
    form = send_form(html)
    assert 'hx-swap-oob="true"' in form and "Sending is not possible" in form
    assert f'action="/clients/{jane.id}/emails"' not in form

    # Nothing changed since: 204. A change that leaves sending possible or not keeps the form
    # (and what the clinician is typing in it) out of the refresh.
    url = poll_url(html)
    assert htmx_get(client, url).status_code == 204
    add_email(jane, events=DELIVERED)
    again = htmx_get(client, url).get_data(as_text=True)
    assert 'id="send-email"' not in again and 'id="client-actions"' in again


def test_a_lifted_block_brings_the_send_form_back_in_the_same_refresh(signed_in_jane):
    from webapp.services.events import spam_list_changed

    client, jane = signed_in_jane
    add_email(jane, events=SPAM_REPORTED)
    url = poll_url(client.get(f"/clients/{jane.id}").get_data(as_text=True))
    db.session.execute(sa.delete(SpamListEntry))
    spam_list_changed([jane.email])
    db.session.commit()

    html = htmx_get(client, url).get_data(as_text=True)
    assert BLOCKED not in html
    assert 'href="#send-email"' in actions(html)
    assert f'action="/clients/{jane.id}/emails"' in send_form(html)


# --- 5. Address health: what the clinician must know, newest by send time, blocked wins ----------


def test_address_health_follows_the_newest_email_by_send_time_and_blocked_wins(signed_in_jane, world):
    client, _ = signed_in_jane
    now = utcnow()
    names = ["Stuck", "Spam", "Newer", "Deferred", "Fine", "Failed"]
    people = {}
    for name in names:
        person = Client(
            clinic_id=world.clinic_a.id, name=f"Health {name}", email=f"{name.lower()}@example.com"
        )
        db.session.add(person)
        people[name] = person
    db.session.commit()
    add_email(people["Stuck"], sent_at=now - timedelta(days=1), events=DELIVERED)
    add_email(people["Stuck"], sent_at=now - timedelta(minutes=25), events=[(5, "processed", {})])
    add_email(people["Spam"], sent_at=now - timedelta(days=3), events=SPAM_REPORTED)
    add_email(
        people["Spam"], sent_at=now - timedelta(days=2), to_address="other@example.com", events=DELIVERED
    )
    # Recorded later (a higher id) but sent earlier: the newest by send time decides.
    add_email(people["Newer"], sent_at=now - timedelta(hours=1), events=DELIVERED)
    add_email(people["Newer"], sent_at=now - timedelta(days=2), events=BOUNCED)
    add_email(
        people["Deferred"],
        sent_at=now - timedelta(hours=3),
        events=[(5, "processed", {}), (60, "deferred", {"attempt": 1, "reason": "421 busy"})],
    )
    add_email(people["Fine"], sent_at=now - timedelta(hours=3), events=DELIVERED)
    add_email(people["Failed"], sent_at=now - timedelta(hours=3), events=BOUNCED)

    marks = health_marks(client.get("/clients?q=health").get_data(as_text=True))
    assert marks == {
        "Health Stuck": "stuck",
        "Health Spam": "spam",
        "Health Newer": "fine",
        "Health Deferred": "deferred",
        "Health Fine": "fine",
        "Health Failed": "failure",
    }
    stuck_page = client.get(f"/clients/{people['Stuck'].id}").get_data(as_text=True)
    assert "Email stuck" in actions(stuck_page)
    spam_page = client.get(f"/clients/{people['Spam'].id}").get_data(as_text=True)
    assert "On the spam list" in actions(spam_page) and BLOCKED in spam_page


def test_a_row_going_stuck_changes_the_mark_when_the_log_refreshes(signed_in_jane, app_clock):
    client, jane = signed_in_jane
    add_email(jane, sent_at=utcnow(), events=[(1, "processed", {})])
    page = client.get(f"/clients/{jane.id}").get_data(as_text=True)
    assert "Fine" in actions(page)
    url = poll_url(page)
    fresh_until = int(re.search(r"v=\d+-(\d+)", url).group(1))
    assert fresh_until <= int((utcnow() + timedelta(minutes=10)).timestamp())  # asks again by then
    app_clock.advance(11 * 60)
    html = htmx_get(client, re.sub(r"(v=\d+-)\d+", rf"\g<1>{int(time.time()) - 1}", url)).get_data(
        as_text=True
    )
    assert "Email stuck" in actions(html)


# --- 6. Wording -----------------------------------------------------------------------------------


def test_the_custom_kind_has_one_name_in_the_menu_the_hints_the_errors_and_the_log(signed_in_jane):
    client, jane = signed_in_jane
    page = client.get(f"/clients/{jane.id}").get_data(as_text=True)
    form = send_form(page)
    assert re.search(r'<option value="free_text">Custom message</option>', form)
    assert "required for a custom message" in form
    assert "free text" not in page.lower() and "free-text" not in page.lower()
    refused = client.post(f"/clients/{jane.id}/emails", data={"kind": "free_text"}).get_data(as_text=True)
    assert refused.count("Required for a custom message.") == 2
    client.post(
        f"/clients/{jane.id}/emails", data={"kind": "free_text", "subject": "Parking", "body": "Back door"}
    )
    assert '<span class="log-kind">Custom message</span>' in client.get(f"/clients/{jane.id}").get_data(
        as_text=True
    )


def test_a_resend_to_another_clients_blocked_address_names_that_client(signed_in_jane, world):
    client, jane = signed_in_jane
    tom = Client(clinic_id=world.clinic_a.id, name="Tom Becker", email="tom@example.com")
    db.session.add(tom)
    db.session.commit()
    add_to_spam_list("TOM@example.com", utcnow(), None, "webhook")
    add_to_spam_list("stranger@example.com", utcnow(), None, "webhook")
    db.session.commit()
    failed = add_email(jane, events=BOUNCED)

    words = text(
        client.post(
            f"/emails/{failed.id}/resend", data={"confirm": "yes", "to_address": "tom@example.com"}
        ).get_data(as_text=True)
    )
    assert "tom@example.com is the address on Tom Becker’s file, not Jane Doe’s." in words
    assert "Only Tom Becker can lift this block" in words
    assert "Only Jane Doe can lift" not in words
    words = text(
        client.post(
            f"/emails/{failed.id}/resend", data={"confirm": "yes", "to_address": "stranger@example.com"}
        ).get_data(as_text=True)
    )
    assert "stranger@example.com is not on any of your client files, not Jane Doe’s." in words
    assert "Only the person who uses it can lift this block" in words
    # Her own blocked address: she is the one to ask.
    add_to_spam_list(jane.email, utcnow(), None, "webhook")
    db.session.commit()
    words = text(
        client.post(
            f"/emails/{failed.id}/resend", data={"confirm": "yes", "to_address": jane.email}
        ).get_data(as_text=True)
    )
    assert f"Only Jane Doe can lift this, by emailing {client.application.config['SUPPORT_ADDRESS']}" in words


def test_an_older_failed_email_offers_no_resend_once_a_later_copy_was_delivered(signed_in_jane):
    from tests.helpers import row_html

    client, jane = signed_in_jane
    now = utcnow()
    typo = "jane@typo.example"
    older = add_email(jane, sent_at=now - timedelta(days=3), to_address=typo, events=BOUNCED)
    newer = add_email(jane, sent_at=now - timedelta(days=1), to_address=typo, events=BOUNCED)
    receipt = add_email(
        jane,
        sent_at=now - timedelta(days=2),
        to_address=typo,
        subject="Your receipt",
        kind="receipt",
        events=BOUNCED,
    )
    client.post(
        f"/emails/{newer.id}/resend",
        data={"confirm": "yes", "to_address": "jane@right.example", "update_client": "y"},
    )
    resent = db.session.execute(sa.select(Email).where(Email.resend_of_id == newer.id)).scalar_one()
    apply_events(
        resent,
        [ProviderEvent("delivered", utcnow(), app_message_id=resent.app_message_id)],
        "webhook",
    )
    db.session.commit()

    page = client.get(f"/clients/{jane.id}").get_data(as_text=True)
    row = row_html(page, older)
    assert f'action="/emails/{older.id}/resend"' not in row
    assert "A later copy reached Jane Doe" in text(row) and "jane@right.example" in text(row)
    assert f'href="#email-{resent.id}"' in row
    # Another email, never delivered since, can still be resent.
    assert f'action="/emails/{receipt.id}/resend"' in row_html(page, receipt)


# --- 8. Resend what the client cannot find; correct the address from the client file ---------------


def test_a_delivered_email_the_client_cannot_find_is_resent_after_the_junk_folder_check(signed_in_jane):
    from tests.helpers import emails_of, timeline_html

    client, jane = signed_in_jane
    delivered = add_email(jane, subject="Your intake form", events=DELIVERED)
    opened = add_email(jane, subject="Opened one", events=[*DELIVERED, (60, "open", {"machine": True})])
    clicked = add_email(
        jane, subject="Clicked one", events=[*DELIVERED, (60, "click", {"url": "https://x.example"})]
    )
    page = client.get(f"/clients/{jane.id}").get_data(as_text=True)
    for email in (delivered, opened):
        assert f'action="/emails/{email.id}/resend"' in timeline_html(client, email)
        assert "Jane Doe says it never arrived?" in text(timeline_html(client, email))
    assert f'action="/emails/{clicked.id}/resend"' not in timeline_html(client, clicked) + page

    confirm = text(client.post(f"/emails/{delivered.id}/resend").get_data(as_text=True))
    assert "was delivered: Jane Doe’s email provider accepted it at" in confirm
    assert "First: Delivered does not guarantee the inbox. Ask Jane Doe to look in their junk" in confirm
    assert "looked in their junk and spam folders and searched for it" in confirm
    data = {"confirm": "yes", "to_address": jane.email}
    skipped = client.post(f"/emails/{delivered.id}/resend", data=data)
    assert skipped.status_code == 422
    assert "First ask the client to look in their junk and spam folders" in skipped.get_data(as_text=True)
    assert len(emails_of(jane)) == 3

    done = client.post(f"/emails/{delivered.id}/resend", data={**data, "checked_junk": "y"})
    assert done.status_code == 303
    resent = emails_of(jane)[-1]
    assert resent.resend_of_id == delivered.id and resent.subject == "Your intake form"
    page = client.get(f"/clients/{jane.id}").get_data(as_text=True)
    assert "Jane Doe could not find it: resent" in text(timeline_html(client, delivered))
    assert "which Jane Doe could not find." in text(timeline_html(client, resent))
    assert f'action="/emails/{delivered.id}/resend"' not in timeline_html(client, delivered) + page


def test_the_address_is_corrected_from_the_client_file_and_audited(signed_in_jane, world):
    from webapp.models import AuditEntry

    client, jane = signed_in_jane
    old = jane.email
    page = client.get(f"/clients/{jane.id}").get_data(as_text=True)
    assert f'action="/clients/{jane.id}/address"' in page
    url = poll_url(page)

    bad = client.post(f"/clients/{jane.id}/address", data={"email": "not an address"})
    assert bad.status_code == 422 and "Invalid email address" in bad.get_data(as_text=True)
    done = client.post(f"/clients/{jane.id}/address", data={"email": "jane.new@example.com"})
    assert done.status_code == 303 and done.headers["Location"] == f"/clients/{jane.id}"
    db.session.refresh(jane)
    assert jane.email == "jane.new@example.com"
    entry = db.session.query(AuditEntry).filter_by(action="client.update_email").one()
    assert entry.detail == f"{old} → jane.new@example.com" and entry.actor.name == "Cleo A"
    page = client.get(f"/clients/{jane.id}").get_data(as_text=True)
    assert f"Saved jane.new@example.com as Jane Doe’s email address (was {old})." in page
    assert "To: jane.new@example.com" in text(send_form(page))
    # A page left open gets the new send form on its next refresh.
    refreshed = htmx_get(client, url).get_data(as_text=True)
    assert "To: jane.new@example.com" in text(send_form(refreshed))

    other = world.client_b
    assert client.post(f"/clients/{other.id}/address", data={"email": "x@example.com"}).status_code == 404


# --- 7. The audit trail speaks in names ----------------------------------------------------------


def test_the_audit_trail_names_emails_clients_and_who_acted(signed_in_jane, app, world):
    from webapp.services import audit

    client, jane = signed_in_jane
    old = jane.email
    failed = add_email(jane, subject="Your intake form", events=BOUNCED)
    client.post(
        f"/emails/{failed.id}/resend",
        data={"confirm": "yes", "to_address": "jane.new@example.com", "update_client": "y"},
    )
    client.post(f"/clients/{jane.id}/address", data={"email": "jane.final@example.com"})
    # An entry written before names were stored (ids only): shown with names all the same.
    audit.record(
        "email.send",
        world.users["clinician"],
        clinic_id=world.clinic_a.id,
        subject_type="email",
        subject_id=failed.id,
        detail=f"to client {jane.id}",
    )
    db.session.commit()

    owner = app.test_client()
    login(owner, "owner@a.example")
    trail = entities.unescape(text(owner.get("/clinic/audit").get_data(as_text=True)))
    assert (
        "Resent an email “Your intake form” to Jane Doe <jane.new@example.com>, resend of the email of"
        in trail
    )
    assert f"Corrected a client's address Jane Doe: {old} → jane.new@example.com (before a resend)" in trail
    assert "Corrected a client's address Jane Doe: jane.new@example.com → jane.final@example.com" in trail
    assert f"Sent an email “Your intake form” to Jane Doe <{old}>" in trail
    assert "Cleo A (clinician)" in trail
    assert not re.search(r"\b(email|client) \d+\b", trail), trail


# --- 10. The clinic's time zone; who sent each email; kind and subject said once -------------------


def test_owners_set_the_clinics_time_zone_and_times_are_shown_in_it(signed_in_jane, app, world):
    from datetime import UTC, datetime

    from tests.helpers import row_html
    from webapp.models import AuditEntry

    client, jane = signed_in_jane
    assert client.get("/clinic/settings").status_code == 404  # owners only
    owner = app.test_client()
    login(owner, "owner@a.example")
    assert '<option selected value="UTC">' in owner.get("/clinic/settings").get_data(as_text=True)
    assert owner.post("/clinic/settings", data={"timezone": "Mars/Olympus"}).status_code == 422
    done = owner.post("/clinic/settings", data={"timezone": "America/Vancouver"})
    assert done.status_code == 303
    db.session.refresh(world.clinic_a)
    assert world.clinic_a.timezone == "America/Vancouver"
    entry = db.session.query(AuditEntry).filter_by(action="clinic.timezone").one()
    assert entry.detail == "UTC → America/Vancouver" and entry.actor.name == "Owen A"

    sent = datetime(utcnow().year, 11, 10, 17, 14, tzinfo=UTC)
    if sent > utcnow() or sent < utcnow() - timedelta(days=29):
        sent = (utcnow() - timedelta(days=2)).replace(hour=17, minute=14, second=0, microsecond=0)
    email = add_email(jane, sent_at=sent, events=DELIVERED)
    page = client.get(f"/clients/{jane.id}").get_data(as_text=True)
    local = sent.astimezone(ZoneInfo("America/Vancouver"))
    assert f"{local:%d %b %H:%M} {local.tzname()}" in row_html(page, email)
    assert local.tzname() in ("PST", "PDT", "MST")  # MST all year from November 2026 (IANA 2026f)
    # The server's text is final: no script re-reads the times with the browser's own zone data.
    assert "data-timezone" not in page and "data-local" not in page
    assert "Times in America/Vancouver time" in text(page)


def test_each_row_says_who_sent_it_and_names_the_kind_only_when_the_subject_does_not(signed_in_jane):
    from tests.helpers import emails_of, row_html

    client, jane = signed_in_jane
    client.post(
        f"/clients/{jane.id}/emails",
        data={
            "kind": "receipt",
            "lines-0-service": "Massage",
            "lines-0-day": "2026-03-02",
            "lines-0-amount": "80.00",
        },
    )
    by_hand = emails_of(jane)[-1]
    automatic = add_email(jane, subject="Appointment reminder", events=DELIVERED)
    other = add_email(jane, subject="Intake please", kind="intake_form", events=DELIVERED)
    page = client.get(f"/clients/{jane.id}").get_data(as_text=True)

    row = row_html(page, by_hand)
    assert "sent by Cleo A" in text(row)
    assert 'class="log-kind"' not in row  # “Your receipt” already says it is a receipt
    row = row_html(page, automatic)
    assert "sent automatically" in text(row) and 'class="log-kind"' not in row
    assert '<span class="log-kind">Intake form</span>' in row_html(page, other)
