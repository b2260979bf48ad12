"""The send form: each kind's own fields, a clear error for every bad input (nothing typed lost),
a preview that is the email that would be sent, and the content stored with the email it sent."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import icalendar
import pytest
import sqlalchemy as sa

from tests.helpers import emails_of, login, text
from webapp.email_frame import EMAIL_FRAME_POLICY
from webapp.extensions import db
from webapp.models import EmailContent
from webapp.queue import get_queue
from webapp.services import handover, sending

NOW = datetime(2026, 12, 7, 20, 0, tzinfo=UTC)
HTMX = {"HX-Request": "true"}
RECEIPT = {
    "kind": "receipt",
    "lines-0-service": "Massage therapy",
    "lines-0-day": "2026-12-01",
    "lines-0-amount": "110",
    "lines-1-service": "Exercise band",
    "lines-1-day": "2026-12-01",
    "lines-1-amount": "12.5",
}
REMINDER = {"kind": "appointment_reminder", "appointment": "2026-12-09T10:00", "practitioner": "Dr Maya Lee"}


@pytest.fixture
def clinic_a(world, app_clock):
    app_clock.now = NOW.timestamp()
    clinic = world.clinic_a
    clinic.timezone = "America/Vancouver"
    clinic.reply_to_address = "front@clinic-a.example"
    clinic.phone = "+1 604 555 0100"
    clinic.postal_address = "1 Main Street\nVancouver"
    clinic.intake_form_url = "https://clinic-a.example/intake"
    db.session.commit()
    return clinic


@pytest.fixture
def signed_in(client, clinic_a):
    login(client, "clinician@a.example")
    return client


def send(client, jane, data):
    return client.post(f"/clients/{jane.id}/emails", data=data)


# --- Stored as sent ----------------------------------------------------------------------------------


def test_a_reminder_is_stored_with_its_html_part_reply_to_and_calendar_file(signed_in, world, app):
    jane = world.client_a
    assert send(signed_in, jane, {**REMINDER, "minutes": "45"}).status_code == 303
    (email,) = emails_of(jane)
    content = db.session.get(EmailContent, email.id)
    assert content is not None and content.reply_to == "front@clinic-a.example"
    assert "Wednesday 9 December 2026 at 10:00 MST" in content.body_html
    assert "Wednesday 9 December 2026 at 10:00 MST" in email.body and "Dr Maya Lee" in email.body
    (event,) = icalendar.Calendar.from_ical(content.calendar_ics).events
    assert str(event["UID"]) == f"{email.app_message_id}@{app.config['MAIL_FROM_ADDRESS'].split('@')[1]}"
    assert event["DTSTART"].dt == email.appointment_at and event["DURATION"].dt.total_seconds() == 45 * 60
    # What the provider is handed.
    message = handover._outgoing(email)
    assert (message.body_text, message.body_html, message.reply_to) == (
        email.body,
        content.body_html,
        "front@clinic-a.example",
    )
    # UTF-8 (names as typed) and the file's own METHOD, as RFC 5545 asks of its MIME type.
    assert [(a.filename, a.content_type) for a in message.attachments] == [
        ("appointment.ics", "text/calendar; charset=utf-8; method=PUBLISH")
    ]
    assert len(get_queue()) == 1


def test_a_receipt_line_may_be_ten_years_back_or_a_year_ahead_of_the_clinics_today(signed_in, world):
    # 20:00 UTC on 7 Dec is 12:00 in Vancouver: its today is the 7th.
    jane = world.client_a
    typed = {**RECEIPT, "lines-0-day": "2016-12-07", "lines-1-day": "2027-12-07"}
    assert send(signed_in, jane, typed).status_code == 303
    (email,) = emails_of(jane)
    assert "07 Dec 2016  Massage therapy" in email.body and "07 Dec 2027  Exercise band" in email.body


def test_a_receipt_is_stored_with_its_lines_and_total(signed_in, world):
    jane = world.client_a
    assert send(signed_in, jane, RECEIPT).status_code == 303
    (email,) = emails_of(jane)
    assert email.subject == "Your receipt"
    assert "01 Dec 2026  Massage therapy: 110.00" in email.body and "Total: 122.50" in email.body
    assert "122.50" in email.content.body_html and email.content.calendar_ics is None


def test_a_resend_is_the_same_email_as_sent(signed_in, world):
    jane = world.client_a
    send(signed_in, jane, REMINDER)
    (original,) = emails_of(jane)
    again = sending.resend(original, to_address="jane@fixed.example", update_client=False, by=None)
    assert (again.subject, again.body) == (original.subject, original.body)
    kept, copied = original.content, db.session.get(EmailContent, again.id)
    assert copied is not None and copied.email_id != kept.email_id
    assert (copied.body_html, copied.reply_to, copied.calendar_ics) == (
        kept.body_html,
        kept.reply_to,
        kept.calendar_ics,
    )


def test_an_email_queued_without_content_stays_text_only(world, app):
    email = sending.queue_email(world.client_a, kind="receipt", subject="R", body="B", sent_by=None)
    # Its content row holds only what every email carries: its From and To names.
    content = email.content
    assert (content.body_html, content.reply_to, content.calendar_ics) == ("", "", None)
    assert (content.from_name, content.from_address, content.to_name) == (
        "Clinic A",
        app.config["MAIL_FROM_ADDRESS"],
        "Jane Doe",
    )
    message = handover._outgoing(email)
    assert (message.body_html, message.attachments, message.track_opens) == ("", (), False)
    assert (message.from_name, message.from_address, message.to_name) == (
        content.from_name,
        content.from_address,
        content.to_name,
    )


# --- The form's errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "field_id", "error"),
    [
        ({"lines-0-amount": "-5"}, "lines-0-amount", "Enter an amount more than 0"),
        ({"lines-0-amount": "0.00"}, "lines-0-amount", "Enter an amount more than 0"),
        ({"lines-0-amount": "1.234"}, "lines-0-amount", "at most two decimals"),
        ({"lines-0-amount": "12,50"}, "lines-0-amount", "as 45.00"),
        ({"lines-0-amount": "NaN"}, "lines-0-amount", "Enter an amount"),
        ({"lines-0-amount": "1e3"}, "lines-0-amount", "Enter an amount"),
        ({"lines-0-amount": ""}, "lines-0-amount", "Enter its amount."),
        ({"lines-0-day": "2026-02-30"}, "lines-0-day", "Enter a real date, as 2026-12-09."),
        ({"lines-0-day": "1/12/2026"}, "lines-0-day", "Enter a real date"),
        # The clinic's today is 7 Dec 2026: ten years back, a year ahead.
        ({"lines-0-day": "0001-01-01"}, "lines-0-day", "Enter a date within the last 10 years."),
        ({"lines-0-day": "2016-12-06"}, "lines-0-day", "Enter a date within the last 10 years."),
        ({"lines-1-day": "2027-12-08"}, "lines-1-day", "Enter a date at most a year from today."),
        ({"lines-0-day": "9999-12-31"}, "lines-0-day", "Enter a date at most a year from today."),
        ({"lines-0-service": "  "}, "lines-0-service", "Name the service."),
        ({"lines-0-service": "x" * 101}, "lines-0-service", "longer than 100"),
    ],
)
def test_a_bad_receipt_line_is_named_at_its_field_and_everything_typed_is_kept(
    signed_in, world, typed, field_id, error
):
    jane = world.client_a
    response = send(signed_in, jane, {**RECEIPT, "subject": "Your receipt, Jane", **typed})
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert re.search(
        rf'id="{field_id}"[^>]*aria-invalid="true"|aria-invalid="true"[^>]*id="{field_id}"', html
    )
    assert error in text(html.split(f'id="{field_id}-error"', 1)[1].split("</p>", 1)[0])
    for name, value in {**RECEIPT, **typed}.items():
        if name.startswith("lines-") and value.strip():
            assert f'value="{value}"' in html, name
    assert 'value="Your receipt, Jane"' in html
    assert emails_of(jane) == [] and len(get_queue()) == 0


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"kind": "receipt"}, "A receipt needs at least one line"),
        ({**REMINDER, "lines-0-service": "Massage"}, "Only a receipt has lines"),
        ({**RECEIPT, "practitioner": "Dr Lee"}, "Only reminders and intake forms name a practitioner."),
        ({**RECEIPT, "minutes": "30"}, "Only a reminder has a length"),
        ({**REMINDER, "minutes": "2"}, "Enter between 5 and 480 minutes."),
        ({**REMINDER, "minutes": "lots"}, "Not a valid integer value."),
        ({**REMINDER, "practitioner": "x" * 101}, "longer than 100"),
        ({**REMINDER, "appointment": "2026-12-01T10:00"}, "The appointment must be in the future."),
    ],
)
def test_each_field_belongs_to_its_kinds_and_says_what_is_wrong(signed_in, world, data, error):
    jane = world.client_a
    response = send(signed_in, jane, data)
    assert response.status_code == 422
    assert error in text(response.get_data(as_text=True))
    assert emails_of(jane) == []


@pytest.mark.parametrize(
    ("appointment", "error"),
    [
        # Past the calendar's last day in UTC (Vancouver is behind it), and a VTIMEZONE to year 10000.
        ("9999-12-31T23:00", "within two years"),
        ("9998-06-30T10:00", "within two years"),
        ("2029-01-01T10:00", "within two years"),
        ("0001-01-01T00:00", "in the future"),
    ],
)
def test_an_appointment_far_from_now_is_refused_never_a_500(signed_in, world, appointment, error):
    jane = world.client_a
    for url in ("emails", "emails/preview"):
        response = signed_in.post(f"/clients/{jane.id}/{url}", data={**REMINDER, "appointment": appointment})
        assert response.status_code == 422, (url, response.status_code)
        assert error in text(response.get_data(as_text=True))
    assert emails_of(jane) == []


def test_an_appointment_in_a_zone_ahead_of_utc_on_the_first_day_is_refused(signed_in, world, clinic_a):
    clinic_a.timezone = "Asia/Tokyo"  # 0001-01-01 00:00 there is before UTC's first day
    db.session.commit()
    response = send(signed_in, world.client_a, {**REMINDER, "appointment": "0001-01-01T00:00"})
    assert response.status_code == 422
    assert "in the future" in text(response.get_data(as_text=True))


def test_an_intake_form_is_refused_while_the_clinic_has_no_form_to_link(signed_in, world, clinic_a):
    clinic_a.intake_form_url = ""
    db.session.commit()
    jane = world.client_a
    response = send(signed_in, jane, {"kind": "intake_form", "practitioner": "Dr Lee"})
    assert response.status_code == 422
    words = text(response.get_data(as_text=True))
    assert "Your clinic has no intake form link yet: an owner adds it under Settings." in words
    assert 'value="Dr Lee"' in response.get_data(as_text=True)
    assert emails_of(jane) == []


def test_an_intake_form_is_refused_while_the_clinics_link_is_not_https(signed_in, world, clinic_a):
    # Saved before the settings asked for https, or seeded: the form says what to fix and where.
    clinic_a.intake_form_url = "http://clinic-a.example/intake"
    db.session.commit()
    jane = world.client_a
    data = {"kind": "intake_form", "practitioner": "Dr Lee"}
    for url, headers in ((f"/clients/{jane.id}/emails", {}), (f"/clients/{jane.id}/emails/preview", HTMX)):
        response = signed_in.post(url, data=data, headers=headers)
        assert response.status_code == 422, url
        words = text(response.get_data(as_text=True))
        assert (
            "intake form link starts with http://, not https://: an owner changes it under Settings." in words
        )
        assert "http://clinic-a.example" not in response.get_data(as_text=True)
    assert emails_of(jane) == []


def test_hostile_line_numbers_and_kinds_are_4xx_never_500(signed_in, world):
    jane = world.client_a
    for data in (
        {"kind": "receipt", "lines-99999999999999999999-service": "x", "lines--1-amount": "1"},
        {"kind": "receipt", **{f"lines-{n}-service": "x" for n in range(50)}},
        {"kind": "nonsense"},
        {"kind": ["receipt", "free_text"]},
        {"kind": "receipt", "lines-0-day": "\x00", "lines-0-amount": "١٢٣", "lines-0-service": "x"},
    ):
        for url in ("emails", "emails/preview", "emails/lines"):
            response = signed_in.post(f"/clients/{jane.id}/{url}", data=data)
            assert response.status_code in (200, 422), (url, data, response.status_code)
    assert emails_of(jane) == []


@pytest.mark.parametrize(
    ("data", "field", "error"),
    [
        # A line break in a subject would split its header; a NUL no database row may hold.
        ({"kind": "free_text", "subject": "Hi\r\nBcc: x@evil.example", "body": "x"}, "subject", "one line"),
        ({"kind": "free_text", "subject": "A\x00B", "body": "x"}, "subject", "one line"),
        ({"kind": "free_text", "subject": "Hi", "body": "A\x00B"}, "body", "control character"),
        ({"kind": "free_text", "subject": "Hi", "body": "A\x1bB"}, "body", "control character"),
        ({**REMINDER, "practitioner": "Dr\nLee"}, "practitioner", "one line"),
        ({**RECEIPT, "lines-0-service": "Massage\u2028therapy"}, "lines-0-service", "one line"),
        ({**RECEIPT, "lines-1-amount": "12.5\x00"}, "lines-1-amount", "one line"),
    ],
)
def test_control_characters_are_refused_at_their_field_never_a_500(signed_in, world, data, field, error):
    jane = world.client_a
    for url in ("emails", "emails/preview"):
        response = signed_in.post(f"/clients/{jane.id}/{url}", data=data)
        assert response.status_code == 422, (url, response.status_code)
        page = response.get_data(as_text=True)
        assert re.search(rf'<p class="field-error" id="{field}-error">[^<]*{error}', page), (url, field)
    assert emails_of(jane) == []


def test_the_message_text_keeps_its_line_breaks_and_tabs(signed_in, world):
    jane = world.client_a
    data = {"kind": "free_text", "subject": "Parking", "body": "Hi Jane,\r\n\tUse the back door."}
    assert send(signed_in, jane, data).status_code == 303
    (email,) = emails_of(jane)
    assert "Hi Jane,\n\tUse the back door." in email.body.replace("\r\n", "\n")


def test_add_a_line_shows_one_more_row_up_to_ten_keeping_what_was_typed(signed_in, world):
    jane = world.client_a
    html = signed_in.post(f"/clients/{jane.id}/emails/lines", data=RECEIPT).get_data(as_text=True)
    assert 'id="lines-3-service"' in html and 'id="lines-4-service"' not in html
    assert 'value="Massage therapy"' in html and "Add a line" in html
    full = {"kind": "receipt", **{f"lines-{n}-service": f"S{n}" for n in range(10)}}
    html = signed_in.post(f"/clients/{jane.id}/emails/lines", data=full, headers=HTMX).get_data(as_text=True)
    assert 'id="lines-9-service"' in html and 'id="lines-10-service"' not in html
    assert "A receipt has at most 10 lines." in html and "Add a line" not in html
    assert emails_of(jane) == []


# --- The preview ---------------------------------------------------------------------------------------


def test_the_preview_shows_both_parts_and_sends_nothing(signed_in, world):
    jane = world.client_a
    response = signed_in.post(f"/clients/{jane.id}/emails/preview", data=REMINDER, headers=HTMX)
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "<html" not in html  # a partial
    assert 'id="preview-subject">Appointment reminder<' in html
    assert "Wednesday 9 December 2026 at 10:00 MST" in html and "appointment.ics" in html
    assert "front@clinic-a.example" in html
    frame = re.search(r'<iframe class="preview-frame" sandbox src="([^"]+)"', html)
    assert frame, html
    assert "allow-" not in html.split("<iframe", 1)[1].split(">", 1)[0]  # no scripts, no same origin
    shown = signed_in.get(frame.group(1))
    assert shown.status_code == 200
    assert shown.headers["Content-Security-Policy"] == EMAIL_FRAME_POLICY
    assert shown.headers["X-Frame-Options"] == "SAMEORIGIN"
    assert emails_of(jane) == [] and len(get_queue()) == 0

    # What was previewed is what is sent, byte for byte.
    preview_html, preview_text = (
        shown.get_data(as_text=True),
        re.search(r'<pre class="preview-text" id="preview-text">(.*?)</pre>', html, re.S).group(1),
    )
    send(signed_in, jane, REMINDER)
    (email,) = emails_of(jane)
    assert email.content.body_html == preview_html
    assert preview_text == email.body.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace(
        "'", "&#39;"
    )


def test_the_preview_without_javascript_is_the_client_file_with_the_form_as_typed(signed_in, world):
    jane = world.client_a
    response = signed_in.post(f"/clients/{jane.id}/emails/preview", data=RECEIPT)
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "<html" in html and 'value="Massage therapy"' in html and "Total: 122.50" in html


def test_a_preview_the_form_refuses_is_the_form_with_its_errors_in_place(signed_in, world):
    jane = world.client_a
    response = signed_in.post(
        f"/clients/{jane.id}/emails/preview", data={**RECEIPT, "lines-0-amount": "-1"}, headers=HTMX
    )
    assert response.status_code == 422
    assert response.headers["HX-Retarget"] == "#send-email" and response.headers["HX-Reswap"] == "outerHTML"
    html = response.get_data(as_text=True)
    assert 'id="send-email"' in html
    assert 'value="-1"' in html and "Enter an amount more than 0" in html


def test_a_preview_is_only_for_the_clinic_and_only_for_whoever_made_it(app, world, clinic_a):
    jane, bob = world.client_a, world.client_b
    mine = app.test_client()
    login(mine, "clinician@a.example")
    html = mine.post(f"/clients/{jane.id}/emails/preview", data=REMINDER, headers=HTMX).get_data(as_text=True)
    frame_url = re.search(r'sandbox src="([^"]+)"', html).group(1)
    # Another clinic's client, and support staff, get nothing.
    assert mine.post(f"/clients/{bob.id}/emails/preview", data=REMINDER).status_code == 404
    for email, status in (("support@platform.example", 404), ("clinician@b.example", 404)):
        other = app.test_client()
        login(other, email)
        assert other.post(f"/clients/{jane.id}/emails/preview", data=REMINDER).status_code == status
        assert other.get(frame_url).status_code == status
    # A colleague in the same clinic cannot open my preview by its address.
    colleague = app.test_client()
    login(colleague, "owner@a.example")
    assert "This preview has expired" in colleague.get(frame_url).get_data(as_text=True)
    assert mine.get(frame_url.replace(frame_url[-32:], "not-a-token")).status_code == 404
    signed_out = app.test_client()
    assert signed_out.get(frame_url).status_code in (302, 401)
    assert db.session.execute(sa.select(sa.func.count()).select_from(EmailContent)).scalar() == 0


def test_previews_are_limited_per_user_and_the_form_says_how_long_to_wait(world, clinic_a, make_app):
    # Each preview keeps its HTML part in Redis for 15 minutes: a user cannot pile them up.
    limited = make_app(RATELIMIT_ENABLED=True, PREVIEW_RATE_LIMIT="3 per minute")
    jane = world.client_a
    url = f"/clients/{jane.id}/emails/preview"
    mine = limited.test_client()
    login(mine, "clinician@a.example")
    assert [mine.post(url, data=REMINDER, headers=HTMX).status_code for _ in range(3)] == [200] * 3
    refused = mine.post(url, data=REMINDER, headers=HTMX)
    assert refused.status_code == 429
    assert 0 < int(refused.headers["Retry-After"]) <= 60
    html = refused.get_data(as_text=True)
    assert "<html" not in html and 'role="alert"' in html  # in place of the preview, announced
    words = text(html)
    assert re.search(
        r"Too many previews in a short time: wait \d+ seconds, then press Preview again\.", words
    )
    assert "Nothing was sent." in words
    # Without JavaScript, a page saying the same, with the way back to the client.
    page = mine.post(url, data=REMINDER)
    assert page.status_code == 429 and "<html" in page.get_data(as_text=True)
    assert "Too many previews" in text(page.get_data(as_text=True))
    assert f'href="/clients/{jane.id}"' in page.get_data(as_text=True)
    # A colleague previews on their own allowance, and sending is not limited.
    colleague = limited.test_client()
    login(colleague, "owner@a.example")
    assert colleague.post(url, data=REMINDER, headers=HTMX).status_code == 200
    assert send(mine, jane, REMINDER).status_code == 303
