"""Every kind of email, composed on the send form and handed over by the worker through each wire
format's real adapter to its sandbox, read back from the request the provider got: text then HTML,
the same parts the copy as sent keeps, the reminder's calendar file read by a calendar library in
the clinic's zone, the intake link in both parts, Reply-To the clinic's, open tracking on and
click tracking asked only for an HTML part with a link (never for the text part's links)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import parseaddr
from zoneinfo import ZoneInfo

import httpx
import icalendar
import pytest

from tests.contract.adapters import ADAPTERS
from tests.contract.reading import READERS, Sent, as_mime, bodies, check_shape
from tests.helpers import WIRE_FORMATS, RecordingTransport, emails_of, login
from webapp import clock as app_time
from webapp.extensions import db
from webapp.models import Client, Email
from webapp.providers import SANDBOX_API_BASE, get_sandbox
from webapp.services import handover

NOW = datetime(2026, 12, 7, 20, 0, tzinfo=UTC)
ZONE = "America/Vancouver"
APPOINTMENT = datetime(2026, 12, 9, 10, 0, tzinfo=ZoneInfo(ZONE))  # as the clinic typed it
SPOKEN = "Wednesday 9 December 2026 at 10:00 MST"  # Vancouver keeps UTC-7 from 2026 (IANA 2026f)
INTAKE = "https://forms.harbour.example/intake?clinic=7&lang=en"
REPLY_TO = "front.desk@harbour.example"
# Names a mail client must show as typed: every character HTML or a header would read.
CLIENT_NAME = 'Zoë O\'Neil & <Sons> "JJ"'
CLINIC_NAME = 'Clínica Harbour & "Bay" <Physio>'
# Beyond ASCII, as a mail client and a calendar must show it.
PRACTITIONER = "Dr Siobhán Ó Súilleabháin"
HOSTILE = '<img src=x onerror=alert(1)> <a href="https://evil.example/x">win</a> & "more"'
FORMS = {
    "appointment_reminder": {
        "appointment": "2026-12-09T10:00",
        "practitioner": PRACTITIONER,
        "minutes": "45",
    },
    "intake_form": {"appointment": "2026-12-09T10:00", "practitioner": PRACTITIONER},
    "receipt": {
        "lines-0-service": "Massage therapy",
        "lines-0-day": "2026-12-01",
        "lines-0-amount": "110",
        "lines-1-service": "Exercise band",
        "lines-1-day": "2026-12-02",
        "lines-1-amount": "12.5",
    },
    "free_text": {"subject": "About parking", "body": f"Hi,\n{HOSTILE}"},
}
# What each kind must say, in the HTML part and in the text part alike.
FACTS = {
    "appointment_reminder": [SPOKEN, PRACTITIONER, "1200 Harbour Street", "+1 604 555 0142"],
    "intake_form": [SPOKEN, PRACTITIONER, "intake form"],
    "receipt": ["Massage therapy", "110.00", "Exercise band", "12.50", "122.50"],
    "free_text": ["Hi,"],
}


@pytest.fixture(params=WIRE_FORMATS)
def wire_format(request: pytest.FixtureRequest) -> str:
    """The app's sandbox plays each provider in turn."""
    return request.param


@pytest.fixture
def jane(world, app_clock) -> Client:
    app_clock.now = NOW.timestamp()
    clinic = world.clinic_a
    clinic.name = CLINIC_NAME
    clinic.timezone = ZONE
    clinic.reply_to_address = REPLY_TO
    clinic.phone = "+1 604 555 0142"
    clinic.postal_address = "1200 Harbour Street\nVancouver, BC V6B 1A1"
    clinic.brand_colour = "#0f766e"
    clinic.intake_form_url = INTAKE
    client = world.client_a
    client.name = CLIENT_NAME
    db.session.commit()
    return client


@pytest.fixture
def handed_over(app, client, jane, wire_format):
    """Compose each kind on the send form, let the worker hand them all over through the real
    adapter (recording its requests); return {kind: (email, request body, message read)}."""
    login(client, "clinician@a.example")
    for kind, data in FORMS.items():
        response = client.post(f"/clients/{jane.id}/emails", data={"kind": kind, **data})
        assert response.status_code == 303, (kind, response.get_data(as_text=True)[:2000])
    sandbox = get_sandbox(app.config)
    transport = RecordingTransport(httpx.WSGITransport(app=sandbox))
    case = next(case for case in ADAPTERS if case.name == wire_format)
    provider = case.provider(sandbox, SANDBOX_API_BASE, transport, app_time.timestamp, None)
    handover.deliver_due(provider)
    emails = {email.kind: email for email in emails_of(jane)}
    assert {email.send_state for email in emails.values()} == {"accepted"}
    sent = bodies([request for request in transport.requests if request.method == "POST"])
    assert len(sent) == len(FORMS)
    read = READERS[wire_format]
    by_kind: dict[str, tuple[Email, dict, Sent]] = {}
    for body in sent:
        check_shape(wire_format, body)
        kind = body["categories"][0] if wire_format == "sendgrid" else body["Tag"]
        by_kind[kind] = (emails[kind], body, read(body))
    return by_kind


def recipient_name(wire_format: str, body: dict) -> str:
    if wire_format == "sendgrid":
        return body["personalizations"][0]["to"][0]["name"]
    return parseaddr(body["To"])[0]


def test_every_kind_goes_as_text_then_html_as_the_copy_keeps_it(handed_over, wire_format):
    assert set(handed_over) == set(FORMS)
    for kind, (email, body, sent) in handed_over.items():
        # Exactly what the copy as sent shows: the stored text part and HTML part.
        assert sent.parts == [("text/plain", email.body), ("text/html", email.content.body_html)], kind
        assert recipient_name(wire_format, body) == CLIENT_NAME
        mime = as_mime(sent, sent.reply_to)
        assert mime["Reply-To"] == REPLY_TO
        alternative = next(part for part in mime.walk() if part.get_content_type() == "multipart/alternative")
        text, html = alternative.iter_parts()
        assert (text.get_content_type(), html.get_content_type()) == ("text/plain", "text/html")
        plain, markup = text.get_content(), html.get_content()
        for fact in FACTS[kind]:
            assert fact in plain, (kind, fact)
            assert fact in markup.replace("&amp;", "&"), (kind, fact)
        # The names, escaped in the HTML part and as typed in the text part (a custom message
        # greets in the clinician's own words).
        if kind != "free_text":
            assert "Hello Zoë O&#39;Neil &amp; &lt;Sons&gt; &#34;JJ&#34;," in markup
            assert f"Hello {CLIENT_NAME}," in plain
        assert "Clínica Harbour &amp; &#34;Bay&#34; &lt;Physio&gt;" in markup
        assert CLINIC_NAME in plain and "<Physio>" not in markup
        assert REPLY_TO in plain and REPLY_TO in markup


def test_reply_to_is_the_clinics_and_opens_are_tracked_on_every_kind(handed_over):
    for kind, (_, _, sent) in handed_over.items():
        assert sent.reply_to == REPLY_TO, kind
        assert sent.track_opens, kind
        assert not sent.text_links_tracked, kind  # the text part's links stay as written


def test_clicks_are_tracked_only_where_the_html_part_has_a_link(handed_over):
    tracked = {kind: sent.track_links for kind, (_, _, sent) in handed_over.items()}
    # A reminder and a receipt link nowhere; the custom message's typed <a> is text, not a link.
    assert tracked == {
        "appointment_reminder": False,
        "intake_form": True,
        "receipt": False,
        "free_text": False,
    }


def test_the_intake_link_is_in_the_html_part_and_written_out_in_the_text_part(handed_over):
    email, _, sent = handed_over["intake_form"]
    (_, plain), (_, markup) = sent.parts
    href = INTAKE.replace("&", "&amp;")
    assert markup.count(f'href="{href}"') == 2  # the button and the address under it
    assert f"Fill in the intake form: {INTAKE}" in plain
    assert email.appointment_at == APPOINTMENT.astimezone(UTC)


def test_a_custom_messages_hostile_words_are_text(handed_over):
    _, _, sent = handed_over["free_text"]
    (_, plain), (_, markup) = sent.parts
    assert HOSTILE in plain
    assert "<img" not in markup and "evil.example" in markup and 'href="https://evil' not in markup
    assert "&lt;img src=x onerror=alert(1)&gt;" in markup


def test_only_the_reminder_carries_a_calendar_file_and_it_reads_in_the_clinics_zone(handed_over, app):
    for kind, (_, _, sent) in handed_over.items():
        assert bool(sent.attachments) == (kind == "appointment_reminder"), kind
    email, _, sent = handed_over["appointment_reminder"]
    mime = as_mime(sent, sent.reply_to)
    [attachment] = [part for part in mime.walk() if part.get_content_disposition() == "attachment"]
    assert (attachment.get_filename(), attachment.get_content_type()) == ("appointment.ics", "text/calendar")
    # UTF-8, and the method the file says (RFC 5545, 8.1), so a mail client reads the names as typed.
    assert (attachment.get_content_charset(), attachment.get_param("method")) == ("utf-8", "PUBLISH")
    raw = attachment.get_payload(decode=True)
    assert raw == email.content.calendar_ics.encode()  # as the copy as sent keeps it
    # Decoded by the part's own charset, as a mail client hands it to a calendar.
    [as_read] = icalendar.Calendar.from_ical(attachment.get_content()).events
    assert str(as_read["SUMMARY"]) == f"Appointment at {CLINIC_NAME} with {PRACTITIONER}"
    # RFC 5545: every line ends in CRLF, none longer than 75 octets.
    lines = raw.split(b"\r\n")
    assert lines[-1] == b"" and all(b"\n" not in line and len(line) <= 75 for line in lines)
    calendar = icalendar.Calendar.from_ical(raw)
    assert str(calendar["METHOD"]) == "PUBLISH"
    [zone] = calendar.timezones
    assert str(zone["TZID"]) == ZONE
    [event] = calendar.events
    start = event["DTSTART"]
    assert start.params["TZID"] == ZONE
    assert start.dt == APPOINTMENT and start.dt.replace(tzinfo=None) == datetime(2026, 12, 9, 10, 0)
    # By the file's own zone rules too, not only by the reader's zone data.
    assert start.dt.replace(tzinfo=zone.to_tz()).astimezone(UTC) == APPOINTMENT.astimezone(UTC)
    assert event["DURATION"].dt == timedelta(minutes=45)
    assert event["DTSTAMP"].dt == NOW and event["DTSTAMP"].to_ical().endswith(b"Z")
    domain = app.config["MAIL_FROM_ADDRESS"].rpartition("@")[2]
    assert str(event["UID"]) == f"{email.app_message_id}@{domain}"
    assert str(event["SUMMARY"]) == f"Appointment at {CLINIC_NAME} with {PRACTITIONER}"
    assert str(event["LOCATION"]) == "1200 Harbour Street, Vancouver, BC V6B 1A1"
