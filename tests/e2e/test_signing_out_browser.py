"""Signing out and stray button addresses, in a real browser: every tab learns why it is signed out
and comes back to its page; a reloaded button address shows the product's page with a way back."""

from __future__ import annotations

import re

from playwright.sync_api import Browser, expect

from tests.e2e.helpers import CLINICIAN, PageProblems, attach_problem_listeners, seed_clinic, sign_in
from tests.helpers import PASSWORD


def test_a_tab_signed_out_everywhere_says_why_and_comes_back_to_its_page(live_server, browser: Browser):
    seeded = seed_clinic(live_server)
    file_url = f"{live_server.url}/clients/{seeded.client_id}"
    phone_context = browser.new_context(
        viewport={"width": 375, "height": 812}, is_mobile=True, has_touch=True
    )
    laptop_context = browser.new_context(viewport={"width": 1280, "height": 900})
    problems = PageProblems()
    try:
        phone = phone_context.new_page()
        attach_problem_listeners(phone, problems)
        sign_in(phone, live_server.url)
        phone.goto(file_url)
        expect(phone.locator("#email-log")).to_be_visible()

        laptop = laptop_context.new_page()
        sign_in(laptop, live_server.url)
        laptop.get_by_role("button", name="Sign out everywhere").click()
        laptop.wait_for_url(re.compile(r"/login$"))
        expect(laptop.get_by_role("status")).to_contain_text("You are signed out on every device")

        # The phone's open log notices by itself, and takes the tab to the sign-in page.
        phone.wait_for_url(re.compile(r"/login$"), timeout=15_000)
        notice = phone.get_by_role("status")
        expect(notice).to_contain_text("“Sign out everywhere” was used")
        expect(notice).to_contain_text("Sign in again to go back to where you were.")
        phone.get_by_label("Email").fill(CLINICIAN)
        phone.get_by_label("Password").fill(PASSWORD)
        phone.get_by_role("button", name="Sign in").click()
        phone.wait_for_url(file_url)
        expect(phone.get_by_role("heading", name="Jane Doe", exact=True)).to_be_visible()
        problems.assert_clean(phone)
    finally:
        phone_context.close()
        laptop_context.close()


def test_sign_out_says_so_and_a_reloaded_button_address_leads_back(live_server, page, problems):
    seeded = seed_clinic(live_server)
    bounced = seeded.email_ids["bounced"]
    sign_in(page, live_server.url)
    response = page.goto(f"{live_server.url}/emails/{bounced}/resend")  # a bookmark of the confirmation
    assert response.status == 405
    expect(page.get_by_role("heading", name="Use the button on the page")).to_be_visible()
    page.get_by_role("link", name="Back to Jane Doe’s file").click()
    page.wait_for_url(f"**/clients/{seeded.client_id}#email-{bounced}")
    expect(page.locator(f"#email-{bounced}")).to_be_visible()

    page.get_by_role("button", name="Sign out", exact=True).click()
    page.wait_for_url(re.compile(r"/login$"))
    expect(page.get_by_role("status")).to_have_text("You are signed out.")
    problems.assert_clean(page, allow=("status of 405",))
