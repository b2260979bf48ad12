"""The email log in a real browser: live badges, the help panel, expired sessions, small screens,
a clean console under the strict CSP, and no accessibility violations axe-core can find."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.e2e.helpers import (
    RECORD_CSP_VIOLATIONS,
    LiveServer,
    PageProblems,
    attach_problem_listeners,
    axe_violations,
    seed_clinic,
    sign_in,
)
from tests.helpers import run_jobs

# A page that navigated (or reloaded) loses this window property.
MARK_PAGE = "window.__samePage = true"
SAME_PAGE = "window.__samePage === true"


def badge_of(page: Page, email_id: int):
    return page.locator(f"#badge-{email_id}")


def newest_email_id(live: LiveServer, client_id: int) -> int:
    import sqlalchemy as sa

    from webapp.extensions import db
    from webapp.models import Email

    return live.run(
        lambda: db.session.execute(
            sa.select(sa.func.max(Email.id)).where(Email.client_id == client_id)
        ).scalar()
    )


def provider_reports(live: LiveServer, email_id: int) -> str:
    """Send queued emails and poll the provider for this one now, as the worker and cron would."""
    from webapp.extensions import db
    from webapp.models import Email, utcnow
    from webapp.services.polling import poll_due

    run_jobs(live.app)

    def poll() -> str:
        email = db.session.get(Email, email_id)
        email.next_poll_at = utcnow() - timedelta(seconds=1)
        db.session.commit()
        poll_due()
        db.session.refresh(email)
        return email.status

    return live.run(poll)


# --- a. Live badges ----------------------------------------------------------------------------


def test_a_sent_email_turns_from_sending_to_delivered_without_a_reload(live_server, page, problems):
    seeded = seed_clinic(live_server)
    sign_in(page, live_server.url)
    page.goto(f"{live_server.url}/clients/{seeded.quiet_client_id}")

    form = page.locator("#send-email")
    form.get_by_label("Kind of message").select_option(label="Intake form")
    form.get_by_role("button", name="Send email").click()
    expect(page.get_by_text("Sending “Your intake form” to sam.quiet+delivered@example.com.")).to_be_visible()
    email_id = newest_email_id(live_server, seeded.quiet_client_id)
    badge = badge_of(page, email_id)
    expect(badge).to_have_text(re.compile(r"^Sending"))
    expect(page.locator("#email-log")).to_have_attribute("data-poll-seconds", "1")
    page.evaluate(MARK_PAGE)
    url = page.url

    assert provider_reports(live_server, email_id) == "delivered"

    expect(badge).to_have_text(re.compile(r"^Delivered"), timeout=5_000)
    expect(badge).to_have_class(re.compile(r"\bbadge-ok\b"))
    assert page.evaluate(SAME_PAGE) and page.url == url
    # Nothing on the log can change soon any more: it slows down.
    expect(page.locator("#email-log")).to_have_attribute("data-poll-seconds", "2")
    expect(page.locator("#email-log .updated-text")).to_have_text(re.compile(r"^updated "))
    problems.assert_clean(page)


def test_a_refresh_keeps_open_timelines_open_and_the_focus_in_place(live_server, page, problems):
    seeded = seed_clinic(live_server)
    sign_in(page, live_server.url)
    page.goto(f"{live_server.url}/clients/{seeded.client_id}")
    page.locator("#send-email").get_by_role("button", name="Send email").click()
    new_id = newest_email_id(live_server, seeded.client_id)
    expect(badge_of(page, new_id)).to_have_text(re.compile(r"^Sending"))
    clicked = seeded.email_ids["clicked"]
    toggle = page.locator(f"#toggle-{clicked}")
    toggle.click()  # opens the timeline and leaves the keyboard focus on the button
    expect(page.locator(f"#timeline-{clicked}")).to_be_visible()
    page.evaluate(MARK_PAGE)

    provider_reports(live_server, new_id)  # the log changes; the browser renders it on its next poll
    expect(badge_of(page, new_id)).to_have_text(re.compile(r"^Delivered"), timeout=5_000)
    expect(page.locator(f"#timeline-{clicked}")).to_be_visible()
    expect(page.locator(f"#timeline-{clicked}")).to_contain_text("machine open")
    expect(page.locator(f"#toggle-{clicked}")).to_have_attribute("aria-expanded", "true")
    expect(page.locator(f"#toggle-{clicked}")).to_be_focused()
    assert page.evaluate(SAME_PAGE)
    problems.assert_clean(page)


def test_a_timeline_is_fetched_when_opened_from_the_keyboard_and_announced(live_server, page, problems):
    seeded = seed_clinic(live_server)
    fetched: list[str] = []
    page.on("request", lambda request: fetched.append(request.url) if "/timeline" in request.url else None)
    sign_in(page, live_server.url)
    page.goto(f"{live_server.url}/clients/{seeded.client_id}")
    clicked = seeded.email_ids["clicked"]
    toggle, timeline = page.locator(f"#toggle-{clicked}"), page.locator(f"#timeline-{clicked}")
    expect(timeline).to_be_hidden()
    expect(timeline).to_be_empty()  # the page carries no timeline until one is opened
    assert fetched == []

    toggle.focus()
    page.keyboard.press("Enter")
    expect(toggle).to_have_attribute("aria-expanded", "true")
    expect(timeline).to_contain_text("Link clicked")
    expect(timeline).to_contain_text("machine open")
    # A polite live region, busy only while it loads: the timeline is announced once it is there.
    expect(timeline).to_have_attribute("aria-live", "polite")
    expect(timeline).not_to_have_attribute("aria-busy", "true")
    expect(toggle).to_be_focused()
    assert fetched == [f"{live_server.url}/emails/{clicked}/timeline"]

    page.keyboard.press("Space")  # closes it, and opening it again asks nothing more
    expect(toggle).to_have_attribute("aria-expanded", "false")
    expect(timeline).to_be_hidden()
    page.keyboard.press("Enter")
    expect(timeline).to_be_visible()
    expect(timeline).to_contain_text("Link clicked")
    assert len(fetched) == 1
    problems.assert_clean(page)


def test_an_open_timeline_stays_fresh_through_the_automatic_refresh(live_server, page, problems):
    seeded = seed_clinic(live_server)
    polls: list[str] = []
    page.on("request", lambda request: polls.append(request.url) if "/emails?" in request.url else None)
    sign_in(page, live_server.url)
    page.goto(f"{live_server.url}/clients/{seeded.client_id}")
    page.locator("#send-email").get_by_role("button", name="Send email").click()
    new_id = newest_email_id(live_server, seeded.client_id)
    toggle, timeline = page.locator(f"#toggle-{new_id}"), page.locator(f"#timeline-{new_id}")
    toggle.click()
    expect(timeline).to_contain_text("Queued for sending")
    expect(timeline).not_to_contain_text("Delivered to the receiving server")
    page.evaluate(MARK_PAGE)

    provider_reports(live_server, new_id)
    # The next refresh brings the open row's timeline with it, up to date, and keeps it open.
    expect(timeline).to_contain_text("Delivered to the receiving server", timeout=5_000)
    expect(toggle).to_have_attribute("aria-expanded", "true")
    expect(timeline).to_be_visible()
    expect(toggle).to_be_focused()
    assert any(f"open={new_id}" in url for url in polls)
    # The rows nobody opened still carry nothing.
    expect(page.locator(f"#timeline-{seeded.email_ids['deferred']}")).to_be_empty()
    assert page.evaluate(SAME_PAGE)
    problems.assert_clean(page)


def test_without_javascript_a_row_links_to_its_timeline_page(live_server, browser: Browser):
    seeded = seed_clinic(live_server)
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    try:
        sign_in(page, live_server.url)
        page.goto(f"{live_server.url}/clients/{seeded.client_id}")
        page.get_by_role("link", name="Timeline of “Your receipt”").click()
        expect(page.get_by_role("heading", name="Timeline of “Your receipt”")).to_be_visible()
        expect(page.locator(".timeline")).to_contain_text("attempt 2")
        page.get_by_role("link", name="Back to Jane Doe’s file").click()
        expect(page.get_by_role("heading", name="Jane Doe", exact=True)).to_be_visible()
        assert page.url.endswith(f"/clients/{seeded.client_id}#email-{seeded.email_ids['deferred']}")
    finally:
        context.close()


def test_a_hidden_tab_stops_polling_and_catches_up_when_shown(live_server, page, problems):
    seeded = seed_clinic(live_server)
    polls: list[str] = []
    page.on("request", lambda request: polls.append(request.url) if "/emails" in request.url else None)
    sign_in(page, live_server.url)
    with page.expect_request(lambda request: "/emails" in request.url, timeout=3_000):
        page.goto(f"{live_server.url}/clients/{seeded.client_id}")  # it polls while visible

    page.evaluate(
        """() => {
          Object.defineProperty(document, "visibilityState", {value: "hidden", configurable: true});
          document.dispatchEvent(new Event("visibilitychange"));
        }"""
    )
    polls.clear()
    page.wait_for_timeout(3_000)  # longer than the slow interval (2 s) of this log
    assert polls == []

    with page.expect_request(lambda request: "/emails" in request.url, timeout=1_000):
        page.evaluate(
            """() => {
              Object.defineProperty(document, "visibilityState", {value: "visible", configurable: true});
              document.dispatchEvent(new Event("visibilitychange"));
            }"""
        )
    problems.assert_clean(page)


# --- b. Help panel -----------------------------------------------------------------------------


def test_clicking_a_badge_opens_its_help_beside_the_log(live_server, page, problems):
    seeded = seed_clinic(live_server)
    sign_in(page, live_server.url)
    page.goto(f"{live_server.url}/clients/{seeded.client_id}")
    page.evaluate(MARK_PAGE)
    url = page.url
    panel = page.locator("#help-panel")
    expect(panel).to_be_hidden()

    badge_of(page, seeded.email_ids["bounced"]).click()
    expect(panel).to_be_visible()
    expect(panel.get_by_role("heading", level=2)).to_contain_text("Failed")
    expect(panel).to_contain_text("outdated address or a typo")
    expect(panel).to_contain_text("Removing a client from the spam list")
    # Another badge replaces the panel's content.
    badge_of(page, seeded.email_ids["clicked"]).click()
    expect(panel.get_by_role("heading", level=2)).to_contain_text("Clicked")
    expect(panel).to_contain_text("skewed by privacy and firewall settings")
    assert page.evaluate(SAME_PAGE) and page.url == url

    panel.get_by_role("button", name="Close help").click()
    expect(panel).to_be_hidden()
    expect(badge_of(page, seeded.email_ids["clicked"])).to_be_focused()
    problems.assert_clean(page)


def test_the_help_panel_opens_and_closes_from_the_keyboard(live_server, page, problems):
    seeded = seed_clinic(live_server)
    sign_in(page, live_server.url)
    page.goto(f"{live_server.url}/clients/{seeded.client_id}")
    target = f"badge-{seeded.email_ids['clicked']}"  # the newest row's badge

    for _ in range(30):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == target:
            break
    else:
        pytest.fail("Tab never reached the badge")

    page.keyboard.press("Enter")
    panel = page.locator("#help-panel")
    expect(panel).to_be_visible()
    expect(panel).to_contain_text("A link or button in the email has been clicked.")
    expect(panel).to_be_focused()
    page.keyboard.press("Escape")
    expect(panel).to_be_hidden()
    expect(page.locator(f"#{target}")).to_be_focused()
    assert page.url.endswith(f"/clients/{seeded.client_id}")
    problems.assert_clean(page)


# --- c. A clean console on every page ----------------------------------------------------------


def test_no_console_errors_or_csp_violations_on_any_page(live_server, page, problems):
    seeded = seed_clinic(live_server)
    base = live_server.url
    page.goto(f"{base}/login")
    problems.assert_clean(page)
    sign_in(page, base)

    page.goto(f"{base}/clients")
    page.get_by_label("Search by name or email").fill("marco")
    expect(page.locator("#client-list")).not_to_contain_text("Jane Doe")
    expect(page.locator("#client-list")).to_contain_text("On the spam list")
    assert "q=marco" in page.url
    problems.assert_clean(page)

    page.get_by_role("link", name="Marco Rossi").click()
    expect(page.get_by_role("heading", name="Emails to this address are blocked")).to_be_visible()
    page.get_by_role("button", name="Copy instructions for the client").click()
    expect(page.locator(".copy-status")).not_to_be_empty()
    problems.assert_clean(page)

    page.goto(f"{base}/clients/{seeded.client_id}")
    page.locator(f"#toggle-{seeded.email_ids['deferred']}").click()
    expect(page.locator(f"#timeline-{seeded.email_ids['deferred']}")).to_contain_text("attempt 2")
    badge_of(page, seeded.email_ids["deferred"]).click()
    expect(page.locator("#help-panel")).to_contain_text("does not guarantee")
    page.get_by_label("Status").select_option("failed")
    expect(page.locator(".log-row")).to_have_count(1)
    page.wait_for_url(re.compile(r"\?status=failed$"))
    problems.assert_clean(page)

    page.get_by_role("button", name="Resend…").click()
    expect(page.get_by_role("heading", name="Resend “Appointment reminder”?")).to_be_visible()
    problems.assert_clean(page)

    for path in ("/help", "/help/statuses/spam-report", f"/clients/{seeded.client_id}?status=delivered"):
        page.goto(base + path)
        page.wait_for_load_state("networkidle")
        problems.assert_clean(page)


# --- d. Expired session ------------------------------------------------------------------------


def test_an_expired_session_takes_the_whole_page_to_the_login_screen(
    live_server, page, problems, monkeypatch
):
    from webapp import security

    seeded = seed_clinic(live_server)
    sign_in(page, live_server.url)
    page.goto(f"{live_server.url}/clients/{seeded.client_id}")
    expect(page.locator("#email-log")).to_be_visible()

    monkeypatch.setattr(security, "IDLE_TIMEOUT_SECONDS", -1)  # every session is now idle for too long
    page.wait_for_url(re.compile(r"/login$"), timeout=10_000)
    monkeypatch.undo()

    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.locator("#email-log")).to_have_count(0)
    expect(page.locator("form input[name=password]")).to_have_count(1)
    problems.assert_clean(page)


# --- e. Small screens --------------------------------------------------------------------------


def test_the_client_file_works_375_pixels_wide(live_server, browser: Browser):
    seeded = seed_clinic(live_server)
    problems = PageProblems()
    context = browser.new_context(viewport={"width": 375, "height": 812}, is_mobile=True, has_touch=True)
    context.add_init_script(RECORD_CSP_VIOLATIONS)
    page = context.new_page()
    attach_problem_listeners(page, problems)
    try:
        sign_in(page, live_server.url)
        for client_id in (seeded.client_id, seeded.blocked_client_id):
            page.goto(f"{live_server.url}/clients/{client_id}")
            assert page.evaluate("document.documentElement.scrollWidth") <= 375

        page.goto(f"{live_server.url}/clients/{seeded.client_id}")
        clicked = seeded.email_ids["clicked"]
        badge, toggle = badge_of(page, clicked), page.locator(f"#toggle-{clicked}")
        for element in (badge, toggle):
            expect(element).to_be_in_viewport()
            box = element.bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= 375
            assert box["height"] >= 24  # big enough to tap
        toggle.tap()
        expect(page.locator(f"#timeline-{clicked}")).to_be_visible()
        expect(page.locator(f"#timeline-{clicked}")).to_contain_text("harbourphysio.example/intake")
        badge.tap()
        expect(page.locator("#help-panel")).to_be_visible()
        expect(page.locator("#help-panel")).to_be_in_viewport()
        assert page.evaluate("document.documentElement.scrollWidth") <= 375
        page.get_by_role("button", name="Close help").tap()
        expect(page.locator("#help-panel")).to_be_hidden()
        problems.assert_clean(page)
    finally:
        context.close()


# --- f. Accessibility --------------------------------------------------------------------------


def test_axe_finds_no_violations_on_login_client_file_and_help(live_server, page, problems):
    seeded = seed_clinic(live_server)
    page.goto(f"{live_server.url}/login")
    assert axe_violations(page) == ""

    sign_in(page, live_server.url)
    page.goto(f"{live_server.url}/clients")
    assert axe_violations(page) == ""

    page.goto(f"{live_server.url}/clients/{seeded.client_id}")
    for key in ("clicked", "bounced"):
        page.locator(f"#toggle-{seeded.email_ids[key]}").click()
        expect(page.locator(f"#timeline-{seeded.email_ids[key]}")).to_be_visible()
    assert axe_violations(page) == ""

    badge_of(page, seeded.email_ids["bounced"]).click()
    expect(page.locator("#help-panel")).to_contain_text("Removing a client from the spam list")
    assert axe_violations(page) == ""

    page.goto(f"{live_server.url}/clients/{seeded.blocked_client_id}")
    page.get_by_text("Show the instructions").click()
    assert axe_violations(page) == ""

    page.goto(f"{live_server.url}/help")
    assert axe_violations(page) == ""

    page.goto(f"{live_server.url}/clients/{seeded.client_id}")
    page.get_by_role("button", name="Resend…").click()
    page.get_by_label("Send to").fill("not an address")
    page.get_by_role("button", name="Resend email").click()
    expect(page.get_by_text("Invalid email address.")).to_be_visible()
    assert axe_violations(page) == ""
    problems.assert_clean(page, allow=("status of 422",))  # the refused form comes back as 422
