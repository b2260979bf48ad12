"""The From and To of "View the email as sent" are those the provider received: fixed when the email
is queued, handed over as fixed and shown as fixed, whatever the clinic or client is called later.
An email queued before they were kept shows them rebuilt from today's names, and says so."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from email.utils import parseaddr
from html import unescape
from typing import Any

import httpx
import pytest

from tests.contract.adapters import ADAPTERS
from tests.contract.reading import bodies
from tests.helpers import DELIVERED, RecordingTransport, add_email, emails_of, login, text
from webapp.extensions import db
from webapp.models import Email, EmailContent, utcnow
from webapp.services import handover, sending

# Each request starts with an empty `g` (conftest.py).
pytestmark = pytest.mark.usefixtures("separate_requests")

ADAPTER = {case.name: case for case in ADAPTERS}
RECEIPT = {"kind": "receipt", "lines-0-service": "Massage therapy", "lines-0-amount": "110"}


@pytest.fixture(params=sorted(ADAPTER))
def wire_format(request: pytest.FixtureRequest) -> str:
    """Each provider's wire format: its adapter is what hands the headers over."""
    return request.param


@pytest.fixture
def hand_over(wire_format, tmp_path, clock) -> Callable[[Email], tuple[str, str]]:
    """Deliver an email through the wire format's adapter to its sandbox; return the From and To
    of the request the adapter made."""
    case = ADAPTER[wire_format]
    simulator = case.simulator(str(tmp_path / "provider.sqlite3"), clock)
    transport = RecordingTransport(httpx.WSGITransport(app=simulator))
    adapter = case.provider(simulator, "http://sandbox.test", transport, clock, None)

    def deliver(email: Email) -> tuple[str, str]:
        start = len(transport.requests)
        assert handover.deliver(email.id, adapter) == "accepted"
        (body,) = bodies(transport.requests[start:])
        return received(wire_format, body)

    return deliver


def received(wire_format: str, body: dict[str, Any]) -> tuple[str, str]:
    """The From and To of one request body, as "Name <address>"."""
    if wire_format == "sendgrid":
        sender, (recipient,) = body["from"], body["personalizations"][0]["to"]
        pairs = [(sender.get("name", ""), sender["email"]), (recipient.get("name", ""), recipient["email"])]
    else:
        pairs = [parseaddr(body["From"]), parseaddr(body["To"])]
    first, second = (f"{name} <{address}>" if name else address for name, address in pairs)
    return first, second


def shown(app, email: Email) -> str:
    """The words of the email's page as sent, as a clinician of its clinic reads them."""
    client = app.test_client()
    login(client, "clinician@a.example")
    response = client.get(f"/emails/{email.id}/as-sent")
    assert response.status_code == 200
    return unescape(text(response.get_data(as_text=True)))


def rename(world, clinic: str, client: str) -> None:
    world.clinic_a.name, world.client_a.name = clinic, client
    db.session.commit()


def test_the_page_shows_the_headers_the_provider_received_after_clinic_and_client_are_renamed(
    app, world, hand_over
):
    rename(world, "Harbour Physio & Co", "Zoë O'Brien")
    composer = app.test_client()
    login(composer, "clinician@a.example")
    receipt = {**RECEIPT, "lines-0-day": (utcnow() - timedelta(days=1)).date().isoformat()}
    assert composer.post(f"/clients/{world.client_a.id}/emails", data=receipt).status_code == 303
    (email,) = emails_of(world.client_a)
    sender, recipient = hand_over(email)
    assert (sender, recipient) == (
        "Harbour Physio & Co <no-reply@clinicmail.example>",
        "Zoë O'Brien <jane.doe+delivered@example.com>",
    )

    # The clinic renames itself, the client's name is corrected, the sender setting changes.
    rename(world, "Harbour Physiotherapy", "Zoe O'Brien-Smith")
    app.config["MAIL_FROM_NAME"] = "Clinic Mail"
    words = shown(app, email)
    assert f"From {sender} To {recipient} Reply-To" in words
    headers = re.search(r"From .* Reply-To", words).group(0)  # not the page's own mention of names
    assert "Physiotherapy" not in headers and "Smith" not in headers and "Clinic Mail" not in headers
    assert "rebuilt" not in words

    # A resend is handed over, and shown, under the names of its own day; the original keeps its own.
    again = sending.resend(email, to_address=email.to_address, update_client=False, by=None)
    assert hand_over(again) == (
        "Clinic Mail <no-reply@clinicmail.example>",
        "Zoe O'Brien-Smith <jane.doe+delivered@example.com>",
    )
    assert "From Clinic Mail <no-reply@clinicmail.example> To Zoe O'Brien-Smith <" in shown(app, again)
    assert f"From {sender} To {recipient} Reply-To" in shown(app, email)


def test_an_email_renamed_before_its_handover_goes_and_shows_under_the_names_it_was_queued_with(
    app, world, hand_over
):
    email = sending.queue_email(world.client_a, kind="receipt", subject="R", body="B", sent_by=None)
    rename(world, "Clinic A, renamed", "Jane Renamed")
    # The same stored names whenever it is handed over (a retry, an in-doubt check's second attempt).
    sender, recipient = hand_over(email)
    assert (sender, recipient) == (
        "Clinic A <no-reply@clinicmail.example>",
        "Jane Doe <jane.doe+delivered@example.com>",
    )
    words = shown(app, email)
    assert f"From {sender} To {recipient} Reply-To" in words and "rebuilt" not in words
    assert "sent as plain text only" in words  # its content row holds the names alone


@pytest.mark.parametrize("wire_format", ["sendgrid"])
def test_an_email_from_before_the_headers_were_kept_shows_them_rebuilt_and_says_so(app, world, wire_format):
    older = add_email(world.client_a, events=DELIVERED)  # no content row: text only, no names
    with_html = add_email(world.client_a, events=DELIVERED)
    db.session.add(EmailContent(email_id=with_html.id, body_html="<p>Hi</p>", reply_to=""))
    db.session.commit()
    rename(world, "Harbour Physiotherapy", "Jane Doe-Smith")
    for email in (older, with_html):
        words = shown(app, email)
        assert (
            "From Harbour Physiotherapy <no-reply@clinicmail.example> (rebuilt, see below) "
            "To Jane Doe-Smith <jane.doe+delivered@example.com> (rebuilt, see below)"
        ) in words
        assert (
            "From and To are rebuilt from the clinic’s current name and sender settings and the "
            "client’s current name: this email was sent before they were kept with each email"
        ) in words
        # What such an email would be handed over with, still queued, is what the page rebuilds.
        message = handover._outgoing(db.session.get(Email, email.id))
        assert (message.from_name, message.to_name) == ("Harbour Physiotherapy", "Jane Doe-Smith")
