"""A delivered, opened email the client's mail server then filed as spam, in a real browser: its row
stays Open and says what the client can do, and so does the help panel its badge opens; at 1280 and
375 px, with a clean console and no accessibility violations axe-core can find."""

from __future__ import annotations

from datetime import timedelta

from playwright.sync_api import expect

from tests.e2e.helpers import axe_violations, seed_clinic, sign_in

ADVICE = "ask Jane Doe to look in their spam folder and mark it as not spam"


def add_filed_email(live, client_id: int) -> int:
    from tests.helpers import add_email
    from webapp.extensions import db
    from webapp.models import Client, utcnow

    def work() -> int:
        jane = db.session.get(Client, client_id)
        return add_email(
            jane,
            sent_at=utcnow() - timedelta(hours=5),
            subject="Your appointment on Friday",
            events=[
                (5, "processed", {}),
                (20, "delivered", {"reason": "smtp;250 2.0.0 OK"}),
                (600, "open", {}),
                (900, "spam_filtered", {"reason": "The message was delivered, but was classified as spam."}),
            ],
        ).id

    return live.run(work)


def test_a_late_spam_notice_shows_on_the_row_and_in_the_help_panel(live_server, page, problems):
    seeded = seed_clinic(live_server)
    email_id = add_filed_email(live_server, seeded.client_id)
    sign_in(page, live_server.url)
    for width in (1280, 375):
        page.set_viewport_size({"width": width, "height": 900})
        page.goto(f"{live_server.url}/clients/{seeded.client_id}")
        row = page.locator(f"#email-{email_id}")
        expect(row.locator(".badge")).to_have_text("Open (what this status means)")
        expect(row.locator(".filed-as-spam")).to_contain_text(ADVICE)
        row.locator(".toggle").click()
        expect(page.locator(f"#timeline-{email_id}")).to_contain_text(
            "Filed as spam by the client's mail server"
        )
        expect(page.locator(f"#timeline-{email_id}")).to_contain_text(
            "Delivered to the receiving server 250 2.0.0 OK"
        )
        row.locator(".badge").click()
        panel = page.locator("#help-panel")
        expect(panel).to_be_visible()
        expect(panel.locator(".filed-as-spam")).to_contain_text(ADVICE)
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), width
        assert axe_violations(page) == ""
    problems.assert_clean(page)
