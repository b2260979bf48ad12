"""What one clinic learns about others: the spam list is shared by every clinic, so a clinic hears
that an address is blocked and how the client can lift it, but not whether or when the client
reported another clinic's email; adding a user does not say whether the address has an account
elsewhere on the platform."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.helpers import BOUNCED, DELIVERED, add_email, login, text
from webapp.extensions import db
from webapp.models import Client, utcnow
from webapp.services.events import add_to_spam_list

# Every page rendered here is checked for CSP breakers; each request starts with an empty `g` (conftest.py).
pytestmark = pytest.mark.usefixtures("separate_requests", "html_guard")

REPORTED_ON = utcnow() - timedelta(days=40)
# What would give away another clinic's report: that there was one, and when. (The log's status
# filter names the status "Spam report" on every client file.)
TELLTALES = (
    "spam list",
    "as spam",
    "reported",
    REPORTED_ON.strftime("%d %b %Y"),
    REPORTED_ON.date().isoformat(),
)


@pytest.fixture
def reported_to_b(world):
    """Bob, client of clinic B, reported B's email as spam; clinic A knows him at the same address."""
    bob_b = world.client_b
    add_email(
        bob_b, subject="B's newsletter", sent_at=REPORTED_ON, events=[*DELIVERED, (60, "spamreport", {})]
    )
    bob_a = Client(clinic_id=world.clinic_a.id, name="Bob at A", email=bob_b.email)
    db.session.add(bob_a)
    db.session.commit()
    return bob_a


def assert_discreet(html: str) -> None:
    words = text(html).lower()
    for telltale in TELLTALES:
        assert telltale.lower() not in words, telltale


@pytest.fixture
def clinician(client, world):
    login(client, "clinician@a.example")
    return client


def test_sending_to_an_address_another_clinic_got_reported_by_says_only_that_it_is_blocked(
    clinician, app, reported_to_b
):
    response = clinician.post(f"/clients/{reported_to_b.id}/emails", data={"kind": "appointment_reminder"})
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    words = text(html)
    assert f"Not sent: {reported_to_b.email} is blocked: our email provider does not deliver to it." in words
    support = app.config["SUPPORT_ADDRESS"]
    assert f"Only Bob at A can lift this, by emailing {support} from {reported_to_b.email}" in words
    assert_discreet(html)


def test_the_client_file_and_list_of_such_a_client_say_blocked(clinician, app, reported_to_b):
    page = clinician.get(f"/clients/{reported_to_b.id}").get_data(as_text=True)
    assert "Emails to this address are blocked" in page
    assert "asking for the block to be lifted" in text(page)  # the instructions for the client
    assert_discreet(page)
    listing = clinician.get("/clients?q=Bob").get_data(as_text=True)
    assert "Blocked" in listing and "On the spam list" not in listing


def test_resending_to_any_blocked_address_says_only_that_it_is_blocked(clinician, world, reported_to_b):
    failed = add_email(world.client_a, events=BOUNCED)
    response = clinician.post(
        f"/emails/{failed.id}/resend", data={"confirm": "yes", "to_address": reported_to_b.email}
    )
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert "is blocked: our email provider does not deliver to it" in text(html)
    assert "for the block to be lifted" in text(html)
    assert_discreet(html.replace("Resend “Appointment reminder”", ""))


def test_the_clinics_own_spam_report_is_still_told_in_full(clinician, world):
    jane = world.client_a
    add_email(jane, subject="Intake form for you", events=[*DELIVERED, (3600, "spamreport", {})])
    response = clinician.post(f"/clients/{jane.id}/emails", data={"kind": "appointment_reminder"})
    words = text(response.get_data(as_text=True))
    assert "is on the spam list: the client reported an earlier email as spam" in words
    assert "Jane Doe reported the email “Intake form for you” as spam on" in words


def test_an_entry_of_unknown_origin_is_not_presented_as_the_clinics_report(clinician, world):
    add_to_spam_list(world.client_a.email, REPORTED_ON, None, "sync")
    db.session.commit()
    page = clinician.get(f"/clients/{world.client_a.id}").get_data(as_text=True)
    assert "Emails to this address are blocked" in page
    assert_discreet(page)


def test_adding_a_user_does_not_tell_whether_the_address_has_an_account_elsewhere(app, world):
    owner = app.test_client()
    login(owner, "owner@a.example")

    def add(email: str) -> str:
        data = {"name": "New Person", "email": email, "role": "clinician", "password": "x" * 16}
        response = owner.post("/clinic/users", data=data)
        assert response.status_code == 422
        return text(response.get_data(as_text=True))

    elsewhere = add("clinician@b.example")
    own = add("clinician@a.example")
    assert "cannot be used for a new account" in elsewhere
    assert "exists" not in elsewhere
    # The same words as for someone the owner can see in their own list.
    assert elsewhere.split(" Email ")[1] == own.split(" Email ")[1]


def test_refused_user_additions_are_limited_per_owner(app, world, make_app):
    limited = make_app(RATELIMIT_ENABLED=True, ADD_USER_REFUSAL_LIMIT="3 per hour")
    owner = limited.test_client()
    login(owner, "owner@a.example")

    def add(email: str) -> int:
        data = {"name": "Probe", "email": email, "role": "clinician", "password": "x" * 16}
        return owner.post("/clinic/users", data=data).status_code

    assert [add(f"new{number}@a.example") for number in range(4)] == [303] * 4  # additions are free
    assert [add(email) for email in ("clinician@b.example", "owner@b.example", "x@b.example")] == [
        422,
        422,
        303,
    ]
    assert add("owner@b.example") == 422
    assert add("someone@b.example") == 429  # three refusals used the hour up
    other_owner = limited.test_client()
    login(other_owner, "owner@b.example")
    data = {"name": "Probe", "email": "clinician@a.example", "role": "clinician", "password": "x" * 16}
    assert other_owner.post("/clinic/users", data=data).status_code == 422
