"""What each adapter hands its provider for one email: the text and HTML parts, the calendar
attachment, Reply-To and the tracking asked for, checked against the provider's documented request
shape and read back as the MIME message the provider would build of it (text, then HTML, then the
attachment, which a calendar library reads as a calendar)."""

from __future__ import annotations

import base64
import dataclasses
import email
import email.policy
import json
from datetime import datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import icalendar
import pytest
from jsonschema import Draft202012Validator

from tests.contract.adapters import AdapterCase
from tests.contract.test_sendgrid_shapes import assert_valid, load_spec
from tests.helpers import HTML_WITH_LINK, HTML_WITHOUT_LINK, INTAKE_LINK, RecordingTransport
from webapp.providers.base import Attachment, OutgoingMessage

POSTMARK_SCHEMA = (
    Path(__file__).resolve().parents[1] / "fixtures" / "postmark" / "send_email_request.schema.json"
)
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


@dataclasses.dataclass
class Sent:
    """One message of a request, in no provider's words."""

    parts: list[tuple[str, str]]  # (MIME type, value), in the request's order
    attachments: list[tuple[str, str, str]]  # (filename, MIME type, base64 content)
    reply_to: str | None
    track_opens: bool
    track_links: bool
    text_links_tracked: bool


def read_sendgrid(body: dict[str, Any]) -> Sent:
    tracking = body["tracking_settings"]
    return Sent(
        parts=[(part["type"], part["value"]) for part in body["content"]],
        attachments=[(a["filename"], a["type"], a["content"]) for a in body.get("attachments", [])],
        reply_to=body.get("reply_to", {}).get("email"),
        track_opens=tracking["open_tracking"]["enable"],
        track_links=tracking["click_tracking"]["enable"],
        text_links_tracked=tracking["click_tracking"]["enable_text"],
    )


def read_postmark(body: dict[str, Any]) -> Sent:
    parts = [("text/plain", body["TextBody"])] if "TextBody" in body else []
    parts += [("text/html", body["HtmlBody"])] if "HtmlBody" in body else []
    return Sent(
        parts=parts,
        attachments=[(a["Name"], a["ContentType"], a["Content"]) for a in body.get("Attachments", [])],
        reply_to=body.get("ReplyTo"),
        track_opens=body["TrackOpens"],
        track_links=body["TrackLinks"] != "None",
        text_links_tracked=body["TrackLinks"] in ("HtmlAndText", "TextOnly"),
    )


def check_shape(case: AdapterCase, body: dict[str, Any]) -> None:
    """The body against the provider's documented request schema."""
    if case.name == "sendgrid":
        assert_valid(load_spec(), "mail_send_request", body)
    else:
        schema = {k: v for k, v in json.loads(POSTMARK_SCHEMA.read_text()).items() if k != "_source"}
        errors = list(Draft202012Validator(schema).iter_errors(body))
        assert not errors, [error.message for error in errors]


def as_mime(sent: Sent, reply_to: str | None) -> EmailMessage:
    """The message the provider builds of the request: alternative parts in the request's order,
    then the attachments; written out and parsed back, as a mail client reads it."""
    built = EmailMessage()
    if reply_to:
        built["Reply-To"] = reply_to
    for mime_type, value in sent.parts:
        subtype = mime_type.split("/")[1]
        if not built.is_multipart() and built.get_content_type() == "text/plain" and not built.get_payload():
            built.set_content(value, subtype=subtype)
        else:
            built.add_alternative(value, subtype=subtype)
    for filename, mime_type, content in sent.attachments:
        maintype, subtype = mime_type.split("/")
        built.add_attachment(base64.b64decode(content), maintype=maintype, subtype=subtype, filename=filename)
    parsed = email.message_from_bytes(built.as_bytes(), policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


@pytest.fixture
def sent(case: AdapterCase, tmp_path, clock):
    """Send messages through the adapter to its sandbox; return each request's messages, read."""
    simulator = case.simulator(str(tmp_path / "provider.sqlite3"), clock)
    transport = RecordingTransport(httpx.WSGITransport(app=simulator))
    provider = case.provider(simulator, BASE, transport, clock, None)
    read = read_sendgrid if case.name == "sendgrid" else read_postmark

    def send(*messages: OutgoingMessage) -> list[tuple[dict[str, Any], Sent]]:
        start = len(transport.requests)
        results = provider.send_batch(list(messages)) if len(messages) > 1 else [provider.send(messages[0])]
        assert {result.outcome for result in results} == {"accepted"}, results
        bodies = []
        for request in transport.requests[start:]:
            document = json.loads(request.content)
            bodies += document if isinstance(document, list) else [document]
        for body in bodies:
            check_shape(case, body)
        return [(body, read(body)) for body in bodies]

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
