"""Issue 11 in a real browser: everything on the client file that depends on the log changes in
the same refresh; resending and correcting an address; Needs attention; appointments at risk."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from playwright.sync_api import Page, expect

from tests.e2e.helpers import LiveServer, seed_clinic, sign_in

MARK_PAGE = "window.__samePage = true"
SAME_PAGE = "window.__samePage === true"
BLOCKED = "Emails to this address are blocked"


def report_spam(live: LiveServer, email_id: int) -> None:
    """The client presses "Report spam" on this email; the provider tells us."""
    from webapp.extensions import db
    from webapp.models import Email, utcnow
    from webapp.providers.base import ProviderEvent
    from webapp.services.events import apply_events

    def work() -> None:
        email = db.session.get(Email, email_id)
        apply_events(
            email, [ProviderEvent("spamreport", utcnow(), app_message_id=email.app_message_id)], "webhook"
        )
        db.session.commit()

    live.run(work)


def deliver_another(live: LiveServer, client_id: int) -> None:
    from tests.helpers import DELIVERED, add_email
    from webapp.extensions import db
    from webapp.models import Client

    live.run(lambda: add_email(db.session.get(Client, client_id), subject="Another one", events=DELIVERED))


# --- 4. A spam report arriving while the file is open ---------------------------------------------


def test_a_spam_report_changes_badge_banner_mark_and_send_form_without_a_reload(
    live_server, page: Page, problems
):
    seeded = seed_clinic(live_server)
    sign_in(page, live_server.url)
    page.goto(f"{live_server.url}/clients/{seeded.client_id}")
    actions = page.locator("#client-actions")
    expect(actions).to_contain_text("Fine")
    expect(actions.get_by_role("link", name="Send email")).to_be_visible()
    expect(page.locator("#send-email").get_by_role("button", name="Send email")).to_be_visible()
    expect(page.get_by_text(BLOCKED)).to_have_count(0)
    page.evaluate(MARK_PAGE)

    # A change that leaves sending possible keeps what the clinician is typing.
    page.locator("#subject").fill("Half-typed subject")
    deliver_another(live_server, seeded.client_id)
    expect(page.locator(".log-row", has_text="Another one")).to_have_count(1, timeout=5_000)
    expect(page.locator("#subject")).to_have_value("Half-typed subject")

    clicked = seeded.email_ids["clicked"]
    report_spam(live_server, clicked)
    expect(page.locator(f"#badge-{clicked}")).to_have_text(re.compile("^Spam report"), timeout=5_000)
    # In the same refresh: the banner, the header's mark and link, and the send form.
    expect(page.get_by_role("heading", name=BLOCKED)).to_be_visible()
    expect(actions).to_contain_text("On the spam list")
    expect(actions.get_by_role("link", name="Send email")).to_have_count(0)
    expect(page.locator("#send-email")).to_contain_text("Sending is not possible")
    expect(page.locator("#send-email form")).to_have_count(0)
    assert page.evaluate(SAME_PAGE)
    problems.assert_clean(page)


# --- 9 and 11. Needs attention, appointments first -------------------------------------------------


def add_at_risk_reminder(live: LiveServer, client_id: int) -> int:
    """A reminder still deferred, for an appointment 20 hours from now."""
    from datetime import timedelta

    from tests.helpers import add_email
    from webapp.extensions import db
    from webapp.models import Client, utcnow

    def work() -> int:
        email = add_email(
            db.session.get(Client, client_id),
            sent_at=utcnow() - timedelta(minutes=30),
            subject="See you tomorrow",
            events=[(5, "processed", {}), (60, "deferred", {"attempt": 1, "reason": "421 busy"})],
        )
        email.appointment_at = utcnow() + timedelta(hours=20)
        db.session.commit()
        return email.id

    return live.run(work)


def test_needs_attention_lands_first_puts_the_appointment_on_top_and_clears_what_is_dealt_with(
    live_server, page: Page, problems
):
    seeded = seed_clinic(live_server)
    at_risk = add_at_risk_reminder(live_server, seeded.client_id)
    sign_in(page, live_server.url)
    expect(page).to_have_url(re.compile(r"/attention$"))
    nav = page.get_by_role("navigation", name="Main")
    # Jane's appointment, her failed email, Marco blocked.
    expect(nav.get_by_role("link", name=re.compile(r"^Needs attention"))).to_contain_text("3")

    items = page.locator(".attention-item")
    expect(items).to_have_count(3)
    first = items.first
    expect(first).to_contain_text("Call the client")
    expect(first).to_contain_text("Jane Doe: appointment")
    expect(first.get_by_role("link", name="+1 555 0101")).to_have_attribute("href", "tel:+15550101")
    expect(items.nth(1)).to_contain_text("“Appointment reminder” failed")
    expect(items.nth(2)).to_contain_text("Marco Rossi: emails are blocked by a spam report")

    # A mis-tap is undone where it happened; the count follows both ways.
    item = page.locator(f"#attention-appointment-{at_risk}")
    item.get_by_role("button", name="Called: mark as dealt with").click()
    expect(item).to_contain_text("Dealt with by Cleo Clinician: taken off Needs attention.")
    expect(item).to_be_in_viewport()
    expect(nav.get_by_role("link", name=re.compile(r"^Needs attention"))).to_contain_text("2")
    item.get_by_role("button", name="Undo").click()
    expect(page.get_by_text("“See you tomorrow” to Jane Doe is back on Needs attention.")).to_be_visible()
    expect(item).to_contain_text("Call the client")
    expect(nav.get_by_role("link", name=re.compile(r"^Needs attention"))).to_contain_text("3")
    item.get_by_role("button", name="Called: mark as dealt with").click()
    expect(item).to_contain_text("Dealt with")
    # The dealt-with item and the one-step resend fit a phone.
    page.set_viewport_size({"width": 375, "height": 800})
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    page.set_viewport_size({"width": 1280, "height": 800})
    page.goto(f"{live_server.url}/attention")
    expect(page.locator(f"#attention-appointment-{at_risk}")).to_have_count(0)
    expect(items).to_have_count(2)
    expect(nav.get_by_role("link", name=re.compile(r"^Needs attention"))).to_contain_text("2")

    # Jane's reminder failed at an address since replaced: it says so, and goes to the new one in one step.
    failed = items.first
    expect(failed).to_contain_text("It went to jane.doe@old-provider.example, an old address")
    failed.get_by_role("button", name="Resend to jane.doe+delivered@example.com").click()
    expect(
        page.get_by_text("Resending “Appointment reminder” to jane.doe+delivered@example.com.")
    ).to_be_visible()
    expect(page.locator(".log-row")).to_have_count(5)  # the seeded four, and the resend
    expect(page.locator(f"#email-{seeded.email_ids['bounced']}")).to_contain_text(
        re.compile(r"Resent .* to jane\.doe\+delivered@example\.com")
    )
    problems.assert_clean(page)


def test_a_reminder_is_composed_with_its_appointment_time(live_server, page: Page, problems):
    seeded = seed_clinic(live_server)
    sign_in(page, live_server.url)
    page.goto(f"{live_server.url}/clients/{seeded.quiet_client_id}")
    form = page.locator("#send-email")
    form.get_by_label("Kind of message").select_option(label="Appointment reminder")
    year = datetime.now(UTC).year + 1  # in the future, and within the two years a reminder may be ahead
    form.get_by_label("Appointment").fill(f"{year}-03-04T09:15")
    form.get_by_role("button", name="Send email").click()
    expect(page.get_by_text("Sending “Appointment reminder”")).to_be_visible()
    row = page.locator(".log-row").first
    expect(row.locator(".log-appointment")).to_contain_text("for the appointment")
    expect(row.locator(".log-appointment time")).to_have_attribute("datetime", f"{year}-03-04T09:15:00+00:00")
    problems.assert_clean(page)


# --- 8. Resend a delivered email the client cannot find; correct the address ------------------------


def test_a_clinician_corrects_the_address_and_resends_a_delivered_email(live_server, page: Page, problems):
    seeded = seed_clinic(live_server)
    sign_in(page, live_server.url)
    page.goto(f"{live_server.url}/clients/{seeded.quiet_client_id}")

    page.get_by_text("Correct the email address").click()
    page.get_by_label("New email address for Sam Quiet").fill("sam.new+delivered@example.com")
    page.get_by_role("button", name="Save the address").click()
    expect(
        page.get_by_text("Saved sam.new+delivered@example.com as Sam Quiet’s email address")
    ).to_be_visible()
    expect(page.locator("#send-email")).to_contain_text("To: sam.new+delivered@example.com")

    row = page.locator(".log-row").first
    row.locator(".toggle").click()
    expect(row.get_by_text("Sam Quiet says it never arrived?")).to_be_visible()
    row.get_by_role("button", name="Check junk folders, then resend…").click()
    expect(page.get_by_text("Delivered does not guarantee the inbox")).to_be_visible()
    expect(page.get_by_label("Send to")).to_have_value("sam.new+delivered@example.com")
    page.get_by_role("button", name="Resend email").click()
    expect(page.get_by_text("First ask the client to look in their junk and spam folders")).to_be_visible()
    page.get_by_label(re.compile("looked in their junk and spam folders")).check()
    page.get_by_role("button", name="Resend email").click()
    expect(
        page.get_by_text("Resending “Appointment reminder” to sam.new+delivered@example.com.")
    ).to_be_visible()
    expect(page.locator(".log-row")).to_have_count(2)
    problems.assert_clean(page, allow=("status of 422",))


# --- 7. The audit trail and the support case page fit a phone ----------------------------------------


def test_the_audit_trail_and_a_support_case_fit_375_pixels(live_server, browser, problems):
    from tests.e2e.helpers import RECORD_CSP_VIOLATIONS, attach_problem_listeners
    from tests.helpers import BOUNCED, PASSWORD, add_email
    from webapp.extensions import db
    from webapp.models import Client, Clinic, RemovalRequest
    from webapp.services import accounts, sending

    long_address = "a.very.long.address.of.a.client.who.likes.long.names@subdomain.of.an.example.com"

    def work() -> int:
        seed_clinic(live_server)
        clinic = db.session.query(Clinic).one()
        accounts.create_user("owner@a.example", "Olive Owner", "owner", PASSWORD, clinic)
        accounts.create_user("support@platform.example", "Sue Support", "support", PASSWORD, None)
        person = Client(clinic_id=clinic.id, name="Long Address", email=long_address)
        db.session.add(person)
        db.session.commit()
        failed = add_email(person, subject="A subject line that is rather long, as some are", events=BOUNCED)
        sending.resend(
            failed, to_address=long_address.replace("a.very", "the.very"), update_client=True, by=None
        )
        case = RemovalRequest(
            from_address=long_address,
            subject="Please remove me from the spam list, I reported your email by mistake",
            body_excerpt="I reported it by mistake. " + "x" * 300,
            message_id="<a-very-long-message-id-0123456789abcdef0123456789abcdef@mail.subdomain.example.com>",
            fingerprint="phone-test",
            verdict="verified",
            evidence={
                "reasons": [],
                "dkim": [{"d": "subdomain.of.an.example.com", "result": "pass", "why": ""}],
                "receiver_dkim": "{@subdomain.of.an.example.com : pass}",
                "signed_headers": {
                    "from": f"Long Address <{long_address}>",
                    "to": "support@clinicmail.example",
                    "subject": "Please remove me from the spam list, I reported your email by mistake",
                    "date": "Sat, 28 Nov 2026 09:00:00 +0000",
                    "message-id": "<a-very-long-message-id-0123456789abcdef@mail.example.com>",
                },
            },
        )
        db.session.add(case)
        db.session.flush()
        # Decided, with a note that is one long link: it must wrap, not widen the page.
        case.status = "rejected"
        case.decision_note = "See https://support.example.com/tickets/" + "0123456789" * 8
        db.session.commit()
        return case.id

    case_id = live_server.run(work)
    context = browser.new_context(viewport={"width": 375, "height": 812}, is_mobile=True, has_touch=True)
    context.add_init_script(RECORD_CSP_VIOLATIONS)
    try:
        for email, path in (
            ("owner@a.example", "/clinic/audit"),
            ("support@platform.example", f"/support/removal-requests/{case_id}"),
        ):
            page = context.new_page()
            attach_problem_listeners(page, problems)
            sign_in(page, live_server.url, email=email)
            page.goto(live_server.url + path)
            assert page.evaluate("document.documentElement.scrollWidth") <= 375, path
            problems.assert_clean(page)
            page.close()
            context.clear_cookies()
    finally:
        context.close()
