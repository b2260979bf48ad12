"""Needs attention (issue 11, items 9 and 11): the clinician's landing page lists what needs acting
on, the most urgent first, each with its next step; counts in the navigation."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from tests.conftest import login
from tests.test_email_log import BOUNCED, CLINICIAN, DELIVERED, add_email, text
from webapp.extensions import db
from webapp.models import AuditEntry, Client, utcnow
from webapp.services.events import add_to_spam_list


@pytest.fixture
def signed_in(client, world):
    login(client, CLINICIAN)
    return client


def people(world, *names: str) -> dict[str, Client]:
    found = {}
    for name in names:
        person = Client(
            clinic_id=world.clinic_a.id,
            name=name,
            email=f"{name.split()[0].lower()}@example.com",
            phone="+1 555 0199",
        )
        db.session.add(person)
        found[name] = person
    db.session.commit()
    return found


def items_on(html: str) -> list[str]:
    """Return the ids of the listed items, in page order."""
    return re.findall(r'<li class="attention-item [^"]*" id="attention-([\w-]+)"', html)


def item_text(html: str, key: str) -> str:
    match = re.search(rf'id="attention-{key}">(.*?)</li>', html, re.S)
    assert match, f"no item {key}"
    return text(match.group(1))


def test_clinicians_land_on_needs_attention(client, world):
    login(client, CLINICIAN)
    assert client.get("/").headers["Location"] == "/attention"
    assert client.get("/attention").status_code == 200
    login_support = client.application.test_client()
    login(login_support, "support@platform.example")
    assert login_support.get("/attention").status_code == 404


def test_each_kind_of_problem_is_listed_with_its_next_step(signed_in, world):
    now = utcnow()
    cast = people(
        world, "Fay Failed", "Stu Stuck", "Bea Blocked", "Dee Deferred", "Ned Newdeferral", "Ray Resent"
    )
    failed = add_email(
        cast["Fay Failed"], sent_at=now - timedelta(hours=5), subject="Your receipt", events=BOUNCED
    )
    stuck = add_email(cast["Stu Stuck"], sent_at=now - timedelta(minutes=40), events=[(5, "processed", {})])
    add_to_spam_list(cast["Bea Blocked"].email, now - timedelta(days=2), None, "webhook")
    db.session.commit()
    deferral = [(5, "processed", {}), (60, "deferred", {"attempt": 1, "reason": "421 busy"})]
    deferred = add_email(cast["Dee Deferred"], sent_at=now - timedelta(hours=3), events=deferral)
    add_email(
        cast["Ned Newdeferral"], sent_at=now - timedelta(minutes=20), events=deferral
    )  # not yet an hour
    original = add_email(cast["Ray Resent"], sent_at=now - timedelta(hours=2), events=BOUNCED)
    add_email(cast["Ray Resent"], resend_of=original, events=DELIVERED)
    add_email(world.client_a, events=DELIVERED)
    add_email(world.client_b, events=BOUNCED)  # another clinic's

    html = signed_in.get("/attention").get_data(as_text=True)
    blocked_id = cast["Bea Blocked"].id
    assert items_on(html) == [
        f"failed-{failed.id}",
        f"blocked-{blocked_id}",
        f"stuck-{stuck.id}",
        f"deferred-{deferred.id}",
    ]

    words = item_text(html, f"failed-{failed.id}")
    assert "Fay Failed: “Your receipt” failed" in words
    assert "the address does not exist at the receiving provider" in words
    assert "Next step: check with Fay Failed" in words and "then resend it" in words
    assert f'action="/emails/{failed.id}/resend"' in html
    words = item_text(html, f"blocked-{blocked_id}")
    assert "Bea Blocked: emails are blocked by a spam report" in words
    assert "Next step: only Bea Blocked can lift it, by emailing" in words
    words = item_text(html, f"stuck-{stuck.id}")
    assert "is stuck in Processed" in words and f"reference E-{stuck.id}" in words
    assert "Next step: nothing, unless it is urgent" in words
    words = item_text(html, f"deferred-{deferred.id}")
    assert "is deferred" in words and "keeps trying for up to 72 hours" in words
    assert "Ray Resent" not in html and "Ned Newdeferral" not in html and "Bob Other" not in html

    # The count is in the navigation of every page.
    nav = signed_in.get("/clients").get_data(as_text=True)
    assert re.search(
        r'href="/attention">Needs attention <span class="count" aria-hidden="true">4</span>', nav
    )


def test_a_failed_spam_drop_is_listed_once_under_the_blocked_client(signed_in, world):
    jane = world.client_a
    add_email(jane, events=[(5, "processed", {}), (30, "dropped", {"reason": "Spam Reporting Address"})])
    html = signed_in.get("/attention").get_data(as_text=True)
    assert items_on(html) == [f"blocked-{jane.id}"]


def test_marking_an_item_as_dealt_with_takes_it_off_and_is_audited(signed_in, world):
    failed = add_email(world.client_a, events=BOUNCED)
    response = signed_in.post(f"/attention/emails/{failed.id}/handled")
    assert response.status_code == 303 and response.headers["Location"] == "/attention"
    html = signed_in.get("/attention").get_data(as_text=True)
    assert items_on(html) == []
    assert "Nothing needs attention" in html
    assert 'class="count"' not in html
    entry = db.session.query(AuditEntry).filter_by(action="email.handled").one()
    assert entry.subject_id == failed.id and entry.actor.name == "Cleo A"
    # Another clinic's email cannot be touched.
    theirs = add_email(world.client_b, events=BOUNCED)
    assert signed_in.post(f"/attention/emails/{theirs.id}/handled").status_code == 404


def test_a_failed_email_with_a_later_delivered_copy_needs_nothing(signed_in, world):
    jane = world.client_a
    add_email(jane, sent_at=utcnow() - timedelta(days=2), to_address="jane@typo.example", events=BOUNCED)
    add_email(jane, sent_at=utcnow() - timedelta(days=1), events=DELIVERED)
    assert items_on(signed_in.get("/attention").get_data(as_text=True)) == []
