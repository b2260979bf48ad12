"""The spam-list removal flow as a newcomer walks it, in the product as `bin/run` starts it.

A clinician sends an email that the client reports as spam (the sandbox's +spam scenario), plays
the client with the sandbox's button (a DKIM-signed mail through the real inbound route), support
approves the case, and the clinician's open client file drops its spam banner on its next refresh.
"""

from __future__ import annotations

import re
import time

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.e2e.helpers import RECORD_CSP_VIOLATIONS, PageProblems, attach_problem_listeners
from tests.product import PASSWORD, free_port, press_ctrl_c, start_product, wait_until_healthy

pytestmark = pytest.mark.embedded

CLIENT = "Sofia Garcia"  # sofia.garcia+spam@example.com: the sandbox reports her next email as spam
BANNER = "Emails to this address are blocked"


def new_page(browser: Browser, problems: PageProblems) -> Page:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(20_000)
    context.add_init_script(RECORD_CSP_VIOLATIONS)
    page = context.new_page()
    attach_problem_listeners(page, problems)
    return page


def sign_in(page: Page, base: str, email: str) -> None:
    page.goto(f"{base}/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: not url.endswith("/login"))


def test_a_newcomer_goes_from_spam_report_to_block_lifted_in_the_browser(tmp_path, browser: Browser):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    # The sandbox's seconds pass faster and the log refreshes every 2 s even after Delivered,
    # so the walk takes seconds; everything else is the product exactly as `bin/run` starts it.
    process = start_product(tmp_path, port, SANDBOX_SPEED="10", LOG_POLL_SLOW_SECONDS="2")
    problems = PageProblems()
    try:
        wait_until_healthy(base, process)
        clinician = new_page(browser, problems)
        sign_in(clinician, base, "clinician@example.com")
        clinician.goto(f"{base}/clients?q=sofia")
        clinician.get_by_role("link", name=CLIENT).click()
        expect(clinician.get_by_text(BANNER)).to_have_count(0)

        form = clinician.locator("#send-email")
        form.get_by_label("Kind of message").select_option(label="Custom message")
        form.locator("#subject").fill("See you Thursday")
        form.locator("#body").fill("Your appointment is at 10:00.")
        form.get_by_role("button", name="Send email").click()
        # The client reports it as spam: the log's badge and, in the same refresh, the banner.
        expect(clinician.locator(".log-row", has_text="See you Thursday").locator(".badge")).to_have_text(
            re.compile("^Spam report"), timeout=60_000
        )
        expect(clinician.get_by_text(BANNER)).to_be_visible(timeout=10_000)

        # Play the client: the sandbox writes and signs her removal email to support.
        clinician.get_by_role("button", name=f"Send {CLIENT}’s removal email (sandbox)").click()
        expect(clinician.get_by_text("Support can now approve it")).to_be_visible()
        expect(clinician.get_by_text(BANNER)).to_be_visible()

        support = new_page(browser, problems)
        sign_in(support, base, "support@example.com")
        deadline = time.time() + 60
        while time.time() < deadline:  # the worker checks the mail; the queue shows its standing
            support.goto(f"{base}/support/removal-requests")
            if support.get_by_text("Approvable", exact=True).count():
                break
            support.wait_for_timeout(500)
        support.get_by_role("link", name=re.compile("sofia.garcia")).first.click()
        expect(support.get_by_text("Proven: a valid signature")).to_be_visible()
        support.get_by_label("Note for the audit trail").fill("Signed by her own mail provider")
        support.get_by_role("button", name="Approve and lift the block").click()
        expect(support.get_by_text("Approved: lifting the block")).to_be_visible()

        # The clinician's page, left open, drops the banner on its next refresh.
        expect(clinician.get_by_text(BANNER)).to_have_count(0, timeout=60_000)
        problems.assert_clean(clinician)
        problems.assert_clean(support)
    finally:
        press_ctrl_c(process)
    assert process.returncode == 0
