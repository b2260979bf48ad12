"""What each adapter hands its provider for one email: the text and HTML parts, the calendar
attachment, Reply-To and the tracking asked for, checked against the provider's documented request
shape and read back as the MIME message the provider would build of it (text, then HTML, then the
attachment, which a calendar library reads as a calendar)."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import icalendar
import pytest

from tests.contract.adapters import AdapterCase
from tests.contract.reading import READERS, Sent, as_mime, bodies, check_shape
from tests.helpers import HTML_WITH_LINK, HTML_WITHOUT_LINK, INTAKE_LINK, RecordingTransport
from webapp.providers.base import Attachment, OutgoingMessage

BASE = "http://sandbox.test"


def calendar_entry() -> bytes:
    """A reminder's .ics: one appointment, in the clinic's zone."""
    calendar = icalendar.Calendar()
    calendar.add("prodid", "-//Clinic email log//test//EN")
    calendar.add("version", "2.0")
    event = icalendar.Event()
    event.add("uid", "appointment-42@clinic.example")
    event.add("summary", "Appointment at Riverside Vets")
    event.add("dtstart", datetime(2027, 1, 12, 15, 0, tzinfo=ZoneInfo("Europe/London")))
    event.add("dtend", datetime(2027, 1, 12, 15, 30, tzinfo=ZoneInfo("Europe/London")))
    event.add("dtstamp", datetime(2027, 1, 5, 9, 0, tzinfo=ZoneInfo("UTC")))
    calendar.add_component(event)
    return calendar.to_ical()


def message(**changes: Any) -> OutgoingMessage:
    """A reminder as the product sends it: both parts, the calendar entry, the clinic's Reply-To."""
    fields = {
        "app_message_id": "app-1",
        "to_address": "pat+delivered@example.com",
        "to_name": "Pat Doe",
        "from_address": "clinic@example.com",
        "from_name": "Riverside Vets",
        "subject": "Your appointment on Tuesday",
        "body_text": "See you on Tuesday 12 January at 15:00.\nIntake form: https://example.com/intake-form",
        "body_html": HTML_WITH_LINK,
        "category": "appointment_reminder",
        "reply_to": "desk@riverside.example",
        "attachments": (Attachment("appointment.ics", "text/calendar", calendar_entry()),),
    }
    return OutgoingMessage(**{**fields, **changes})


@pytest.fixture
def sent(case: AdapterCase, tmp_path, clock):
    """Send messages through the adapter to its sandbox; return each request's messages, read."""
    simulator = case.simulator(str(tmp_path / "provider.sqlite3"), clock)
    transport = RecordingTransport(httpx.WSGITransport(app=simulator))
    provider = case.provider(simulator, BASE, transport, clock, None)
    read = READERS[case.name]

    def send(*messages: OutgoingMessage) -> list[tuple[dict[str, Any], Sent]]:
        start = len(transport.requests)
        results = provider.send_batch(list(messages)) if len(messages) > 1 else [provider.send(messages[0])]
        assert {result.outcome for result in results} == {"accepted"}, results
        sent_bodies = bodies(transport.requests[start:])
        for body in sent_bodies:
            check_shape(case.name, body)
        return [(body, read(body)) for body in sent_bodies]

    return send


def test_a_reminder_goes_with_both_parts_its_calendar_and_the_clinics_reply_to(sent):
    [(_, reminder)] = sent(message())

    # Text first, then HTML: SendGrid refuses another order, and a mail client shows the last it can.
    assert reminder.parts == [("text/plain", message().body_text), ("text/html", HTML_WITH_LINK)]
    assert reminder.reply_to == "desk@riverside.example"
    assert (reminder.track_opens, reminder.track_links, reminder.text_links_tracked) == (True, True, False)
    mime = as_mime(reminder, reminder.reply_to)
    assert mime["Reply-To"] == "desk@riverside.example"
    alternative, attachment = mime.iter_parts()
    assert alternative.get_content_type() == "multipart/alternative"
    text, html = alternative.iter_parts()
    assert (text.get_content_type(), html.get_content_type()) == ("text/plain", "text/html")
    assert text.get_content() == message().body_text + "\n"
    assert INTAKE_LINK in html.get_content() and INTAKE_LINK in text.get_content()
    assert (attachment.get_filename(), attachment.get_content_type()) == ("appointment.ics", "text/calendar")
    assert attachment.get_content_disposition() == "attachment"
    calendar = icalendar.Calendar.from_ical(attachment.get_payload(decode=True))
    [event] = calendar.walk("VEVENT")
    assert event.decoded("dtstart") == datetime(2027, 1, 12, 15, 0, tzinfo=ZoneInfo("Europe/London"))
    assert str(event["summary"]) == "Appointment at Riverside Vets"


def test_the_attachment_arrives_byte_for_byte(sent):
    # Every byte value, CRLF and non-UTF-8 included: base64 carries them all.
    raw = bytes(range(256)) + b"\r\n" + calendar_entry()
    [(_, one)] = sent(message(attachments=(Attachment("appointment.ics", "text/calendar", raw),)))
    [(filename, mime_type, content)] = one.attachments
    assert (filename, mime_type) == ("appointment.ics", "text/calendar")
    assert base64.b64decode(content, validate=True) == raw


def test_a_text_only_email_asks_for_no_tracking_and_has_no_html_part(sent):
    [(body, text_only)] = sent(message(body_html="", attachments=(), reply_to=""))
    assert text_only.parts == [("text/plain", message().body_text)]
    assert "HtmlBody" not in body and "reply_to" not in body and "ReplyTo" not in body
    assert "attachments" not in body and "Attachments" not in body
    # No pixel to fetch, no HTML link to rewrite, and the text part's links are left as written.
    assert (text_only.track_opens, text_only.track_links, text_only.text_links_tracked) == (
        False,
        False,
        False,
    )
    assert [part.get_content_type() for part in as_mime(text_only, None).walk()] == ["text/plain"]


def test_an_html_email_without_a_link_asks_for_opens_only(sent):
    [(_, no_link)] = sent(message(body_html=HTML_WITHOUT_LINK))
    assert ("text/html", HTML_WITHOUT_LINK) in no_link.parts
    assert (no_link.track_opens, no_link.track_links) == (True, False)


def test_each_message_of_a_batch_keeps_its_own_content(sent):
    batch = [
        message(app_message_id="a-1", to_address="a+delivered@example.com"),
        message(
            app_message_id="a-2",
            to_address="b+delivered@example.com",
            body_html="",
            attachments=(),
            reply_to="",
        ),
        message(app_message_id="a-3", to_address="c+delivered@example.com", reply_to="front@other.example"),
    ]
    read = sent(*batch)
    assert len(read) == 3
    first, second, third = (one for _, one in read)
    assert len(first.attachments) == 1 and second.attachments == [] and len(third.attachments) == 1
    assert [one.reply_to for one in (first, second, third)] == [
        "desk@riverside.example",
        None,
        "front@other.example",
    ]
    assert [len(one.parts) for one in (first, second, third)] == [2, 1, 2]
    assert [one.track_opens for one in (first, second, third)] == [True, False, True]
