"""Browser tests: the real app served on a loopback port, driven by Debian's Chromium.

The server runs in a thread of the test process, so a test can seed the database, run queued
jobs and poll the sandbox provider itself, then watch the page react.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator

import pytest
from flask import Flask
from playwright.sync_api import Browser, Page, Playwright, sync_playwright
from werkzeug.serving import make_server

from tests.e2e.helpers import RECORD_CSP_VIOLATIONS, LiveServer, PageProblems, attach_problem_listeners

CHROMIUM = "/usr/bin/chromium"
# Without the background-networking flags Chromium keeps dialling out, which the closed test
# network refuses; the rest keep a headless run quiet and fast.
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def playwright_instance() -> Iterator[Playwright]:
    """One Playwright driver for the whole run."""
    with sync_playwright() as playwright:
        yield playwright


@pytest.fixture(scope="session")
def browser(playwright_instance: Playwright) -> Iterator[Browser]:
    """Debian's Chromium (CI installs the `chromium` package); never a downloaded browser."""
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package (apt-get install chromium)")
    browser = playwright_instance.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield browser
    browser.close()


@pytest.fixture
def live_server_settings() -> dict[str, object]:
    """More settings for the served app: a test parametrizes this to change them."""
    return {}


@pytest.fixture
def live_server(
    make_app: Callable[..., Flask], live_server_settings: dict[str, object]
) -> Iterator[LiveServer]:
    """The app with fast log polling and a fast sandbox, served in a background thread."""
    app = make_app(
        LOG_POLL_FAST_SECONDS=1,
        LOG_POLL_SLOW_SECONDS=2,
        SANDBOX_SPEED=1000.0,  # the sandbox's seconds pass in milliseconds
        LOG_STREAM_HEARTBEAT_SECONDS=1,  # a log's stream notices an ended session within a second
        WTF_CSRF_ENABLED=True,  # the browser goes through the real CSRF checks
        **live_server_settings,
    )
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield LiveServer(app, f"http://127.0.0.1:{server.server_port}")
    finally:
        app.extensions["log_feed"].stop()  # ends the open logs' streams, so their threads finish
        server.shutdown()
        thread.join(timeout=5)
        server.server_close()


@pytest.fixture
def problems() -> PageProblems:
    """What went wrong in the page, collected as the test runs."""
    return PageProblems()


@pytest.fixture
def page(browser: Browser, problems: PageProblems) -> Iterator[Page]:
    """A fresh desktop-sized page that records console errors and CSP violations."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(10_000)
    context.add_init_script(RECORD_CSP_VIOLATIONS)
    page = context.new_page()
    attach_problem_listeners(page, problems)
    yield page
    context.close()
