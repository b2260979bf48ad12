"""The email log's push in a real browser: a change shows through the log's event stream without
the timed poll, and when the stream cannot be had the log still updates by polling."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from flask import Flask, Response, request
from playwright.sync_api import Page, Route, expect
from werkzeug.serving import make_server

from tests.e2e.helpers import LiveServer, seed_clinic, sign_in

HOUR = 3600


@pytest.fixture
def serve(make_app: Callable[..., Flask]) -> Iterator[Callable[..., LiveServer]]:
    """Serve the app with these settings on a loopback port, in threads of the test process."""
    servers = []

    def start(**settings: object) -> LiveServer:
        app = make_app(WTF_CSRF_ENABLED=True, **settings)
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        server = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        servers.append((app, server, thread))
        return LiveServer(app, f"http://127.0.0.1:{server.server_port}")

    yield start
    for app, server, thread in servers:
        app.extensions["log_feed"].stop()  # ends the open streams, so their threads finish
        server.shutdown()
        thread.join(timeout=5)
        server.server_close()


def client_opens_email(live: LiveServer, client_id: int, kind: str = "open") -> int:
    """Store an open (or another event) of the client's newest email, as the provider's webhook
    would; return its id."""
    import sqlalchemy as sa

    from webapp.extensions import db
    from webapp.models import Email, utcnow
    from webapp.providers.base import ProviderEvent
    from webapp.services.events import Target, lock_emails, store_events

    def work() -> int:
        email = db.session.execute(
            sa.select(Email).where(Email.client_id == client_id).order_by(Email.id.desc()).limit(1)
        ).scalar_one()
        lock_emails([email.id])
        target = Target(email.id, email.clinic_id, email.client_id, email.to_address)
        event = ProviderEvent(kind, utcnow(), app_message_id=email.app_message_id)
        store_events({email.id: (target, [event])}, "webhook")
        db.session.commit()
        return email.id

    return live.run(work)


def wait_for(page: Page, check: Callable[[], bool], seconds: float = 10) -> None:
    """Wait until check() holds, letting Playwright run the page's handlers meanwhile."""
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        page.wait_for_timeout(50)


def test_a_change_shows_through_the_stream_without_the_timed_poll(serve, page: Page, problems):
    # Polls an hour apart: within this test only the stream can bring the change.
    live = serve(LOG_POLL_FAST_SECONDS=HOUR, LOG_POLL_SLOW_SECONDS=HOUR, LOG_POLL_STREAM_SECONDS=HOUR)
    seeded = seed_clinic(live)
    sign_in(page, live.url)
    page.goto(f"{live.url}/clients/{seeded.quiet_client_id}")
    log_requests: list[str] = []
    page.on(
        "request", lambda request: log_requests.append(request.url) if "/emails?" in request.url else None
    )
    feed = live.app.extensions["log_feed"]
    wait_for(page, lambda: feed.open_count() == 1)
    expect(page.locator("#email-log")).to_have_attribute("data-poll-seconds", str(HOUR))

    email_id = client_opens_email(live, seeded.quiet_client_id)
    expect(page.locator(f"#badge-{email_id}")).to_have_text("Open (what this status means)")
    assert log_requests, "the log was fetched after the stream rang"
    assert feed.open_count() == 1  # the swap kept the one stream
    problems.assert_clean(page)


# Counts the log refreshes the page asks for (app.js triggers "poll" on the log for each).
COUNT_POLLS = """
window.__polls = 0;
document.addEventListener("poll", function () { window.__polls += 1; }, true);
"""


def test_a_change_announced_while_the_log_is_on_its_way_is_fetched_after_it(serve, page: Page, problems):
    # Polls an hour apart: within this test only the stream's rings bring changes.
    live = serve(LOG_POLL_FAST_SECONDS=HOUR, LOG_POLL_SLOW_SECONDS=HOUR, LOG_POLL_STREAM_SECONDS=HOUR)
    hold, held, release = threading.Event(), threading.Event(), threading.Event()

    @live.app.after_request
    def hold_one_log(response: Response) -> Response:
        # The log rendered, its answer held back: what changes now is news to the browser.
        if hold.is_set() and request.path.endswith("/emails"):
            hold.clear()
            held.set()
            release.wait(10)
        return response

    seeded = seed_clinic(live)
    page.add_init_script(COUNT_POLLS)
    fetched: list[str] = []
    page.on("requestfinished", lambda req: fetched.append(req.url) if "/emails?" in req.url else None)
    sign_in(page, live.url)
    page.goto(f"{live.url}/clients/{seeded.quiet_client_id}")
    feed = live.app.extensions["log_feed"]
    wait_for(page, lambda: feed.open_count() == 1 and bool(fetched))  # the stream's first fetch is done

    hold.set()
    email_id = client_opens_email(live, seeded.quiet_client_id)  # rings: the log renders "Open", held
    wait_for(page, held.is_set)
    asked = page.evaluate("window.__polls")
    client_opens_email(live, seeded.quiet_client_id, "click")  # rings while that answer is on its way
    wait_for(page, lambda: page.evaluate("window.__polls") > asked)
    release.set()

    badge = page.locator(f"#badge-{email_id}")
    expect(badge).to_have_text("Clicked (what this status means)")
    assert feed.open_count() == 1
    problems.assert_clean(page)


def test_without_its_stream_the_log_still_updates_by_polling(serve, page: Page, problems):
    live = serve(LOG_POLL_FAST_SECONDS=1, LOG_POLL_SLOW_SECONDS=1)
    seeded = seed_clinic(live)
    refused: list[str] = []

    def unavailable(route: Route) -> None:
        refused.append(route.request.url)
        route.fulfill(status=503, body="")

    page.route("**/emails/stream", unavailable)
    sign_in(page, live.url)
    page.goto(f"{live.url}/clients/{seeded.quiet_client_id}")
    wait_for(page, lambda: bool(refused))
    email_id = client_opens_email(live, seeded.quiet_client_id)
    expect(page.locator(f"#badge-{email_id}")).to_have_text("Open (what this status means)")
    assert live.app.extensions["log_feed"].open_count() == 0
    # The browser reports the refused stream; nothing else may go wrong.
    problems.assert_clean(page, allow=("503", "EventSource"))
