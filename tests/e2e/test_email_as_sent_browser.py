""" "View the email as sent" in a real browser: opened from the log's row, the HTML part shows in its
sandboxed frame while nothing in it runs or loads (no script, no tracking pixel, no remote
stylesheet, no form post) and a link clicked in it goes nowhere; at 1280 and 375 px, with no
accessibility violations axe-core can find."""

from __future__ import annotations

from urllib.parse import urlsplit

from playwright.sync_api import expect

from tests.e2e.helpers import axe_violations, seed_clinic, sign_in

HOSTILE_HTML = (
    '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Reminder</title>'
    '<link rel="stylesheet" href="https://fonts.tracker.invalid/x.css">'
    "<script>window.__ran = 1; parent.document.title = 'owned';</script></head>"
    '<body style="background:url(https://bg.tracker.invalid/bg.png)">'
    '<p id="words" style="color:#1f5fbf">Your appointment is on <b>Monday at 3 pm</b>.</p>'
    '<img src="https://pixel.tracker.invalid/open.gif" width="1" height="1" alt="">'
    '<img id="onerror" src="x" onerror="window.__ran = 2" alt="">'
    '<p><a id="link" href="https://evil.tracker.invalid/intake">Fill in the form</a></p>'
    '<p><a id="top" href="https://evil.tracker.invalid/top" target="_top">Open on top</a></p>'
    '<form action="https://evil.tracker.invalid/post" method="post"><button id="send">Send</button></form>'
    "</body></html>"
)


def add_copy(live, email_id: int) -> None:
    from webapp.extensions import db
    from webapp.models import Email, EmailContent

    def work() -> None:
        email = db.session.get(Email, email_id)
        # Its HTML part and Reply-To replaced, its From and To kept as stored.
        content = email.content or EmailContent(email_id=email_id)
        content.body_html, content.reply_to = HOSTILE_HTML, "front@harbourphysio.example"
        db.session.add(content)
        email.body = (
            "Your appointment is on Monday at 3 pm.\n\nFill in the form: https://harbourphysio.example/intake"
        )
        db.session.commit()

    live.run(work)


def test_the_copy_shows_the_html_part_and_nothing_in_it_runs_loads_or_navigates(live_server, page):
    seeded = seed_clinic(live_server)
    email_id = seeded.email_ids["clicked"]
    add_copy(live_server, email_id)
    # Every request for another host, and why it failed: the browser reports a load the policy
    # refused as a request that failed for 'csp', never sent.
    elsewhere: dict[str, str] = {}

    def failed(request) -> None:
        if urlsplit(request.url).hostname != "127.0.0.1":
            elsewhere[request.url] = request.failure or ""

    page.context.on("request", lambda request: failed(request))
    page.context.on("requestfailed", failed)
    sign_in(page, live_server.url)
    for width in (1280, 375):
        page.set_viewport_size({"width": width, "height": 900})
        page.goto(f"{live_server.url}/clients/{seeded.client_id}")
        page.locator(f"#email-{email_id}").get_by_role("link", name="View the email as sent").click()
        page.wait_for_url(f"**/emails/{email_id}/as-sent")
        frame = page.frame_locator("iframe.as-sent-frame")
        expect(frame.locator("#words")).to_contain_text("Monday at 3 pm")
        expect(page.locator(".as-sent-text")).to_contain_text("Fill in the form: https://harbourphysio")
        framed = next(child for child in page.frames if child.url.endswith("/as-sent.html"))
        assert framed.evaluate("window.__ran") is None  # neither the script nor the onerror ran
        assert page.title() != "owned"
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), width
        assert axe_violations(page) == ""
        # A link to the top, a form and a link in the frame: none leaves the app (the last one
        # last: a frame refused a navigation shows the browser's error page instead).
        frame.locator("#top").click()
        frame.locator("#send").click()
        frame.locator("#link").click()
        page.wait_for_timeout(300)
        assert urlsplit(page.url).path == f"/emails/{email_id}/as-sent"
        assert not [child.url for child in page.frames if "tracker.invalid" in child.url]
    assert set(elsewhere) == {
        "https://fonts.tracker.invalid/x.css",
        "https://bg.tracker.invalid/bg.png",
        "https://pixel.tracker.invalid/open.gif",  # the tracking pixel
    }, elsewhere
    assert set(elsewhere.values()) == {"csp"}, elsewhere
