"""Needs attention (issue 11, items 9 and 11): the clinician's landing page lists what needs acting
on, the most urgent first, each with its next step; counts in the navigation."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from tests.helpers import BOUNCED, CLINICIAN, DELIVERED, add_email, login, text
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


def assert_counts_agree(clinic_id: int) -> None:
    """The navigation's count (plain rows, SQL for later copies) agrees with the page's items."""
    from collections import Counter

    from webapp.services import attention

    kinds = Counter(item.kind for item in attention.items(clinic_id))
    counted = attention.counts(clinic_id)
    assert counted == {**{kind: kinds[kind] for kind in attention.KINDS}, "all": sum(kinds.values())}


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

    assert "1 failed email · 1 client blocked · 1 stuck email · 1 long deferral" in text(html)
    words = item_text(html, f"failed-{failed.id}")
    assert "Fay Failed: “Your receipt” failed" in words
    assert "the address does not exist (check it with the client" in words
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
    assert_counts_agree(world.clinic_a.id)


def test_a_failed_spam_drop_is_listed_once_under_the_blocked_client(signed_in, world):
    jane = world.client_a
    add_email(
        jane,
        events=[
            (5, "processed", {}),
            (30, "dropped", {"reason": "Spam Reporting Address", "reject_reason": "spam_report"}),
        ],
    )
    html = signed_in.get("/attention").get_data(as_text=True)
    assert items_on(html) == [f"blocked-{jane.id}"]


def test_marking_an_item_as_dealt_with_takes_it_off_and_is_audited(signed_in, world):
    failed = add_email(world.client_a, events=BOUNCED)
    response = signed_in.post(f"/attention/emails/{failed.id}/handled")
    assert response.status_code == 303 and response.headers["Location"].startswith("/attention")
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
    assert_counts_agree(jane.clinic_id)


# --- 11. Before the appointment --------------------------------------------------------------------


def reminder(person: Client, appointment_in: timedelta, events, sent_ago: timedelta = timedelta(minutes=2)):
    email = add_email(person, sent_at=utcnow() - sent_ago, events=events)
    email.appointment_at = utcnow() + appointment_in
    db.session.commit()
    return email


def march_gap(year: int) -> str:
    """The last Sunday of March of this year (Europe's clocks go forward at 01:00 UTC)."""
    from datetime import date, timedelta

    last = date(year, 3, 31)
    return (last - timedelta(days=(last.weekday() + 1) % 7)).isoformat()


def test_a_reminder_carries_the_appointment_time_read_in_the_clinics_time_zone(signed_in, world):
    from datetime import UTC, datetime

    from tests.helpers import emails_of, row_html

    world.clinic_a.timezone = "Europe/Paris"
    db.session.commit()
    jane = world.client_a
    page = signed_in.get(f"/clients/{jane.id}").get_data(as_text=True)
    assert 'type="datetime-local"' in page and "Europe/Paris time" in page
    year = utcnow().year + 1
    response = signed_in.post(
        f"/clients/{jane.id}/emails",
        data={"kind": "appointment_reminder", "appointment": f"{year}-07-14T10:30"},
    )
    assert response.status_code == 303
    (email,) = emails_of(jane)
    assert email.appointment_at == datetime(year, 7, 14, 8, 30, tzinfo=UTC)  # 10:30 in Paris, summer time
    day = f"{datetime(year, 7, 14):%A}"
    # The email names the zone as every page does.
    assert f"appointment at Clinic A on {day} 14 July {year} at 10:30 CEST." in email.body
    row = text(row_html(signed_in.get(f"/clients/{jane.id}").get_data(as_text=True), email))
    assert f"for the appointment {day[:3]} 14 Jul {year} at 10:30 CEST" in row

    for data, error in (
        ({"kind": "receipt", "appointment": f"{year}-07-14T10:30"}, "Only reminders and intake forms"),
        ({"kind": "intake_form", "appointment": f"{year - 2}-07-14T10:30"}, "must be in the future"),
        # 02:30 on the last Sunday of March does not happen in Paris: the clocks jump to 03:00.
        ({"kind": "intake_form", "appointment": f"{march_gap(year)}T02:30"}, "no such time in Europe/Paris"),
    ):
        refused = signed_in.post(f"/clients/{jane.id}/emails", data=data)
        assert refused.status_code == 422 and error in refused.get_data(as_text=True)
    assert len(emails_of(jane)) == 1


def test_appointments_at_risk_come_first_with_call_the_client_and_the_phone(signed_in, world):
    cast = people(
        world,
        "Fran Failed",
        "Dora Deferred",
        "Pat Processed",
        "Dan Delivered",
        "Leo Later",
        "Ben Blocked",
        "Paul Past",
    )
    processed = [(5, "processed", {})]
    deferral = [*processed, (60, "deferred", {"attempt": 1, "reason": "421 busy"})]
    failed = reminder(cast["Fran Failed"], timedelta(days=3), BOUNCED)
    deferred = reminder(cast["Dora Deferred"], timedelta(hours=20), deferral)
    in_flight = reminder(cast["Pat Processed"], timedelta(hours=10), processed)
    reminder(cast["Dan Delivered"], timedelta(hours=5), DELIVERED)
    reminder(cast["Leo Later"], timedelta(hours=30), processed)  # 24 hours before is still to come
    dropped = reminder(
        cast["Ben Blocked"],
        timedelta(hours=40),
        [*processed, (30, "dropped", {"reason": "Spam Reporting Address", "reject_reason": "spam_report"})],
    )
    past = reminder(cast["Paul Past"], -timedelta(hours=2), BOUNCED, sent_ago=timedelta(days=1))
    plain = add_email(world.client_a, events=BOUNCED)

    html = signed_in.get("/attention").get_data(as_text=True)
    assert items_on(html) == [
        f"appointment-{in_flight.id}",
        f"appointment-{deferred.id}",
        f"appointment-{dropped.id}",
        f"appointment-{failed.id}",
        f"failed-{plain.id}",
        f"failed-{past.id}",
        f"blocked-{cast['Ben Blocked'].id}",
    ]
    words = item_text(html, f"appointment-{deferred.id}")
    assert words.startswith("Call the client Dora Deferred: appointment")
    assert "has still not been delivered (Deferred), and the appointment is less than 24 hours away" in words
    assert "Next step: call Dora Deferred on ☎ +1 555 0199 to confirm the appointment." in words
    assert 'href="tel:+15550199"' in html
    words = item_text(html, f"appointment-{failed.id}")
    assert "failed: the address does not exist" in words and "and check their email address" in words
    words = item_text(html, f"appointment-{dropped.id}")
    assert "was refused: emails to ben@example.com are blocked by a spam report" in words
    assert "Leo Later" not in html and "Dan Delivered" not in html
    assert_counts_agree(world.clinic_a.id)


def test_a_resend_keeps_the_appointment_and_its_risk(signed_in, world):
    jane = world.client_a
    failed = reminder(jane, timedelta(hours=30), BOUNCED)
    signed_in.post(f"/emails/{failed.id}/resend", data={"confirm": "yes", "to_address": "jane@right.example"})
    from tests.helpers import emails_of

    resent = emails_of(jane)[-1]
    assert resent.appointment_at == failed.appointment_at
    html = signed_in.get("/attention").get_data(as_text=True)
    assert items_on(html) == []  # on its way, and the appointment is more than 24 hours away
    assert_counts_agree(jane.clinic_id)


def test_the_demo_puts_tomorrows_unreachable_clients_first(app, client):
    from tests.helpers import PASSWORD
    from webapp.services import demo

    demo.seed(PASSWORD)
    login(client, "clinician@example.com")
    html = client.get("/attention").get_data(as_text=True)
    top = re.findall(r'<li class="attention-item attention-(\w+)".*?<a href="[^"]+">([^<]+)</a>', html, re.S)[
        :3
    ]
    assert top == [
        ("appointment", "Noah Williams"),
        ("appointment", "Liam Chen"),
        ("appointment", "Priya Patel"),
    ]
    assert html.count("Call the client") == 3
    from webapp.models import User

    assert_counts_agree(db.session.query(User).filter_by(email="clinician@example.com").one().clinic_id)
