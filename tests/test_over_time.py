"""What to do, over time (issue 18, items 3 to 5): stuck guidance escalates after the hour on the row,
the help panel and Needs attention alike; a failed email sent to an address since corrected says so
and is resent to the new one in one step; "Mark as dealt with" can be undone."""

from __future__ import annotations

import html as entities
import re
from datetime import timedelta

import pytest
import sqlalchemy as sa

from tests.helpers import (
    BOUNCED,
    CLINICIAN,
    PASSWORD,
    add_email,
    emails_of,
    htmx_get,
    login,
    poll_url,
    row_html,
    text,
)
from webapp import statuses
from webapp.extensions import db
from webapp.models import AuditEntry, Email, utcnow


@pytest.fixture
def signed_in(client, world):
    login(client, CLINICIAN)
    return client


def attention_item(html: str, key: str) -> str | None:
    """The words of one Needs attention item, or None when it is not listed."""
    match = re.search(rf'id="attention-{key}">(.*?)</li>', html, re.S)
    return text(match.group(1)) if match else None


def panel(client, email: Email) -> str:
    """The help panel the row's badge opens, in words."""
    response = client.get(f"/help/statuses/{email.status}?email={email.id}", headers={"HX-Request": "true"})
    assert response.status_code == 200
    return text(response.get_data(as_text=True))


# --- 3. Stuck guidance escalates after the hour ----------------------------------------------------


def test_the_thresholds_are_named_once_and_said_in_words():
    from webapp.services import next_steps

    assert statuses.STUCK_AFTER_SECONDS == 10 * 60
    assert statuses.CONTACT_SUPPORT_AFTER_SECONDS == 60 * 60
    assert (next_steps.STUCK_AFTER_WORDS, next_steps.CONTACT_SUPPORT_AFTER_WORDS) == ("10 minutes", "1 hour")


@pytest.mark.parametrize("status", ["sending", "processed"])
def test_stuck_guidance_escalates_after_the_hour_on_the_row_the_panel_and_needs_attention(
    signed_in, world, app, app_clock, status
):
    support = app.config["SUPPORT_ADDRESS"]
    start = app_clock.now
    events = [(1, "processed", {})] if status == "processed" else []
    email = add_email(world.client_a, sent_at=utcnow(), events=events)
    assert email.status == status
    now_words = f"contact support now, quoting E-{email.id}"

    for minutes in (5, 11, 59, 61, 180):
        app_clock.now = start + minutes * 60
        row = text(row_html(signed_in.get(f"/clients/{world.client_a.id}").get_data(as_text=True), email))
        help_panel = panel(signed_in, email)
        item = attention_item(signed_in.get("/attention").get_data(as_text=True), f"stuck-{email.id}")
        if minutes == 5:
            assert "stuck" not in row and now_words not in row
            assert "Nothing yet: the log updates by itself." in help_panel and now_words not in help_panel
            assert item is None
        elif minutes in (11, 59):
            assert "so it looks stuck" in row and "you do not need to contact them" in row, minutes
            assert f"quoting E-{email.id}, only if it is still stuck 1 hour after it was sent" in row
            assert "What to do about this email" in help_panel
            assert f"under reference E-{email.id}: you do not need to contact them yet" in help_panel
            assert f"quoting E-{email.id}, only if it is still stuck 1 hour after it was sent" in help_panel
            assert "Nothing yet" not in help_panel
            assert "Next step: nothing, unless it is urgent" in item
            assert f"quoting E-{email.id}, only if it is still stuck 1 hour after it was sent" in item
            for words in (row, help_panel, item):
                assert now_words not in words, minutes
        else:
            assert f"{now_words}, at {support}" in row, minutes
            assert f"{now_words}, at {support}" in help_panel, minutes
            assert f"{now_words}, at {support}" in item, minutes
            assert "still stuck more than 1 hour after it was sent" in row
            for words in (row, help_panel, item):
                assert "only if" not in words and "do not need to contact" not in words, minutes
                assert "Nothing yet" not in words and "Next step: nothing" not in words, minutes


def test_a_stuck_row_keeps_the_log_fresh_only_until_its_hour(signed_in, world):
    email = add_email(world.client_a, sent_at=utcnow() - timedelta(minutes=59, seconds=30))
    url = poll_url(htmx_get(signed_in, f"/clients/{world.client_a.id}/emails").get_data(as_text=True))
    fresh_until = int(re.search(r"v=\d+-(\d+)", url).group(1))
    # The row's advice changes at the hour: the browser must ask again by then, not a minute later.
    assert fresh_until == int((email.created_at + timedelta(hours=1)).timestamp())


def test_an_email_in_doubt_past_the_hour_asks_for_support_too(signed_in, world, app):
    email = add_email(world.client_a, sent_at=utcnow() - timedelta(minutes=61))
    email.send_state = "in_doubt"
    email.in_doubt_since = email.created_at
    db.session.commit()
    row = text(row_html(signed_in.get(f"/clients/{world.client_a.id}").get_data(as_text=True), email))
    assert "we are checking whether the provider received it" in row
    assert f"contact support now, quoting E-{email.id}, at {app.config['SUPPORT_ADDRESS']}" in row
    assert "You do not need to do anything" not in row


def test_an_appointment_whose_reminder_is_stuck_past_the_hour_also_says_to_contact_support(signed_in, world):
    email = add_email(world.client_a, sent_at=utcnow() - timedelta(hours=2), events=[(1, "processed", {})])
    email.appointment_at = utcnow() + timedelta(hours=5)
    db.session.commit()
    item = attention_item(signed_in.get("/attention").get_data(as_text=True), f"appointment-{email.id}")
    assert "Next step: there is no phone number on Jane Doe’s file" in item
    assert f"also contact support now, quoting E-{email.id}" in item


# --- 4. After an address correction ----------------------------------------------------------------


def test_a_failure_at_a_corrected_address_is_explained_and_resent_to_the_new_one_in_one_step(
    signed_in, world
):
    jane = world.client_a
    old = jane.email
    failed = add_email(jane, sent_at=utcnow() - timedelta(hours=1), events=BOUNCED)
    failed.appointment_at = utcnow() + timedelta(hours=20)
    db.session.commit()
    before = attention_item(signed_in.get("/attention").get_data(as_text=True), f"appointment-{failed.id}")
    assert "and check their email address" in before and "old address" not in before

    response = signed_in.post(f"/clients/{jane.id}/address", data={"email": "jane.new@example.com"})
    assert response.status_code == 303

    page = signed_in.get(f"/clients/{jane.id}").get_data(as_text=True)
    assert re.search(r'class="health health-fine">.*?Fine', page, re.S)  # about the new address
    sentence = f"It went to {old}, an old address. Jane Doe’s file now has jane.new@example.com"
    row = text(row_html(page, failed))
    assert sentence in row and "this email has not been sent there yet." in row
    assert "Resend to jane.new@example.com" in row and "Resend…" in row

    attention = signed_in.get("/attention").get_data(as_text=True)
    item = attention_item(attention, f"appointment-{failed.id}")
    assert sentence in item and "this email has not been sent there yet." in item
    assert "and resend it to jane.new@example.com" in item
    assert "check their email address" not in item
    # The two screens say it in the same words.
    on_file = re.search(r'<p class="old-address">.*?</p>', page, re.S).group(0)
    assert on_file in attention

    # One step: the button's form carries everything the resend needs.
    form = re.search(
        r'<form method="post" action="(/emails/\d+/resend)">(.*?)</form>',
        attention[attention.index(on_file) :],
        re.S,
    )
    fields = dict(re.findall(r'name="([^"]+)" value="([^"]*)"', form.group(2)))
    assert "Resend to" in form.group(2) and fields["to_address"] == "jane.new@example.com"
    response = signed_in.post(
        form.group(1), data={name: entities.unescape(value) for name, value in fields.items()}
    )
    assert response.status_code == 303 and response.headers["Location"] == f"/clients/{jane.id}"
    resent = emails_of(jane)[-1]
    assert resent.resend_of_id == failed.id and resent.to_address == "jane.new@example.com"
    assert resent.appointment_at == failed.appointment_at
    db.session.refresh(jane)
    assert jane.email == "jane.new@example.com"
    attention = signed_in.get("/attention").get_data(as_text=True)
    assert attention_item(attention, f"appointment-{failed.id}") is None
    row = text(row_html(signed_in.get(f"/clients/{jane.id}").get_data(as_text=True), failed))
    assert "Resent" in row and "jane.new@example.com" in row and "old address" not in row


def test_a_failure_at_the_address_on_file_still_asks_to_check_it(signed_in, world):
    failed = add_email(world.client_a, events=BOUNCED)
    item = attention_item(signed_in.get("/attention").get_data(as_text=True), f"failed-{failed.id}")
    assert "check with Jane Doe that the address is current" in item and "old address" not in item
    row = text(row_html(signed_in.get(f"/clients/{world.client_a.id}").get_data(as_text=True), failed))
    assert "old address" not in row and "Resend…" in row


def test_no_one_step_resend_to_a_new_address_that_is_blocked(signed_in, world):
    from webapp.services.events import add_to_spam_list

    jane = world.client_a
    failed = add_email(jane, events=BOUNCED)
    jane.email = "jane.blocked@example.com"
    add_to_spam_list(jane.email, utcnow(), None, "webhook")
    db.session.commit()
    html = signed_in.get("/attention").get_data(as_text=True)
    assert attention_item(html, f"failed-{failed.id}") is not None
    assert "Resend to jane.blocked@example.com" not in html
    page = signed_in.get(f"/clients/{jane.id}").get_data(as_text=True)
    assert "Resend to jane.blocked@example.com" not in page


# --- 5. "Mark as dealt with" can be undone --------------------------------------------------------


def nav_count(html: str) -> str | None:
    match = re.search(r'href="/attention">Needs attention <span class="count" aria-hidden="true">(\d+)', html)
    return match.group(1) if match else None


def test_dealt_with_stays_in_place_with_an_undo_that_restores_it_and_both_are_audited(signed_in, world):
    failed = add_email(world.client_a, events=BOUNCED)
    key = f"failed-{failed.id}"
    assert nav_count(signed_in.get("/attention").get_data(as_text=True)) == "1"

    response = signed_in.post(f"/attention/emails/{failed.id}/handled")
    assert response.status_code == 303
    assert response.headers["Location"] == f"/attention?dealt={failed.id}#dealt-{failed.id}"
    html = signed_in.get(response.headers["Location"]).get_data(as_text=True)
    item = attention_item(html, key)
    assert "Jane Doe: “Appointment reminder”" in item and "Dealt with by Cleo A" in item and "Undo" in item
    assert f'action="/attention/emails/{failed.id}/undo"' in html
    assert "Mark as dealt with" not in item and "Resend" not in item
    assert nav_count(html) is None and "Nothing else needs attention" in html
    # Without the undo offer, it is simply gone.
    assert attention_item(signed_in.get("/attention").get_data(as_text=True), key) is None

    response = signed_in.post(f"/attention/emails/{failed.id}/undo")
    assert response.status_code == 303 and response.headers["Location"] == f"/attention#about-{failed.id}"
    html = signed_in.get("/attention").get_data(as_text=True)
    item = attention_item(html, key)
    assert "“Appointment reminder” failed" in item and "Mark as dealt with" in item
    assert f'id="about-{failed.id}"' in html
    assert "is back on Needs attention" in text(html)
    assert nav_count(html) == "1"
    db.session.refresh(failed)
    assert failed.handled_at is None and failed.handled_by_id is None
    audit = db.session.execute(sa.select(AuditEntry).order_by(AuditEntry.id)).scalars().all()
    assert [
        (entry.action, entry.actor.name, entry.subject_id) for entry in audit if "handled" in entry.action
    ] == [
        ("email.handled", "Cleo A", failed.id),
        ("email.handled_undone", "Cleo A", failed.id),
    ]

    # An undo of something not marked changes and audits nothing; another clinic's email is not found.
    assert signed_in.post(f"/attention/emails/{failed.id}/undo").status_code == 303
    assert db.session.query(AuditEntry).filter_by(action="email.handled_undone").count() == 1
    theirs = add_email(world.client_b, events=BOUNCED)
    assert signed_in.post(f"/attention/emails/{theirs.id}/undo").status_code == 404
    assert signed_in.get("/attention?dealt=abc").status_code == 200
    assert signed_in.get(f"/attention?dealt={theirs.id}").get_data(as_text=True).count("Bob Other") == 0


def test_the_owners_audit_trail_names_the_undo(client, world):
    failed = add_email(world.client_a, events=BOUNCED)
    login(client, CLINICIAN)
    client.post(f"/attention/emails/{failed.id}/handled")
    client.post(f"/attention/emails/{failed.id}/undo")
    login(client, "owner@a.example")
    words = text(client.get("/clinic/audit").get_data(as_text=True))
    assert "Dealt with an email another way" in words
    assert "Put an email back on Needs attention" in words


def test_the_undo_is_a_csrf_protected_post(make_app, world):
    protected = make_app(WTF_CSRF_ENABLED=True)
    failed = add_email(world.client_a, events=BOUNCED)
    browser = protected.test_client()
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', browser.get("/login").get_data(as_text=True))
    browser.post("/login", data={"email": CLINICIAN, "password": PASSWORD, "csrf_token": token.group(1)})
    page = browser.get("/attention").get_data(as_text=True)
    token = re.search(
        rf'action="/attention/emails/{failed.id}/handled">\s*<input[^>]*value="([^"]+)"', page
    ).group(1)
    assert (
        browser.post(f"/attention/emails/{failed.id}/handled", data={"csrf_token": token}).status_code == 303
    )
    page = browser.get(f"/attention?dealt={failed.id}").get_data(as_text=True)
    undo = re.search(rf'action="/attention/emails/{failed.id}/undo">\s*<input[^>]*value="([^"]+)"', page)
    assert undo, "the undo form carries its token"
    assert browser.post(f"/attention/emails/{failed.id}/undo").status_code == 400
    assert browser.get(f"/attention/emails/{failed.id}/undo").status_code == 405
    db.session.refresh(failed)
    assert failed.handled_at is not None
    assert (
        browser.post(f"/attention/emails/{failed.id}/undo", data={"csrf_token": undo.group(1)}).status_code
        == 303
    )
    db.session.refresh(failed)
    assert failed.handled_at is None
