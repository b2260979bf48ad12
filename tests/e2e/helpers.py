"""Helpers of the browser tests: the live server's handle, sign-in, the seeded clinic, and what
went wrong in a page. Plain functions and values only; the fixtures are in conftest.py."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from flask import Flask
from playwright.sync_api import ConsoleMessage, Page

from tests.helpers import BOUNCE, CLINICIAN, PASSWORD, add_email

# Recorded by the page itself, so a test sees CSP violations even when nothing else logs them.
RECORD_CSP_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", function (event) {
  window.__cspViolations.push(event.violatedDirective + " " + (event.blockedURI || "inline"));
});
"""


@dataclass
class LiveServer:
    """The app served on a loopback port."""

    app: Flask
    url: str

    def run(self, work: Callable[[], Any]) -> Any:
        """Run `work` inside the app's context (as a worker or a scheduled job would)."""
        with self.app.app_context():
            return work()


@dataclass
class PageProblems:
    """Console errors, uncaught exceptions and CSP violations seen by one page."""

    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)

    def csp_violations(self, page: Page) -> list[str]:
        """Return the CSP violations the current document recorded."""
        return page.evaluate("window.__cspViolations || []")

    def assert_clean(self, page: Page, allow: tuple[str, ...] = ()) -> None:
        """Fail when the console showed an error (other than allowed ones) or CSP blocked anything."""
        errors = [error for error in self.console_errors if not any(text in error for text in allow)]
        assert errors == [], errors
        assert self.page_errors == [], self.page_errors
        assert self.csp_violations(page) == []


def attach_problem_listeners(page: Page, problems: PageProblems) -> None:
    """Collect console errors and uncaught exceptions of this page into `problems`."""

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error" or "Content-Security-Policy" in message.text:
            problems.console_errors.append(f"{message.text} ({message.location.get('url', '')})")

    page.on("console", on_console)
    page.on("pageerror", lambda error: problems.page_errors.append(str(error)))


def sign_in(page: Page, base_url: str, email: str = CLINICIAN, password: str = PASSWORD) -> None:
    """Sign in through the login form, as a person would."""
    page.goto(f"{base_url}/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: not url.endswith("/login"))


@dataclass
class SeededClinic:
    """What the seeded clinic holds, by id (objects would be tied to the seeding session)."""

    client_id: int  # Jane: a history of every kind of event
    quiet_client_id: int  # one delivered email
    blocked_client_id: int  # on the spam list
    email_ids: dict[str, int]


def seed_clinic(live: LiveServer) -> SeededClinic:
    """A clinic with a clinician and a client whose log has a history of every kind of event."""
    from webapp.extensions import db
    from webapp.models import Client, Clinic, utcnow
    from webapp.services import accounts

    def work() -> SeededClinic:
        clinic = Clinic(name="Harbour Physio", intake_form_url="https://harbourphysio.example/intake")
        db.session.add(clinic)
        db.session.flush()
        accounts.create_user(CLINICIAN, "Cleo Clinician", "clinician", PASSWORD, clinic)
        jane = Client(
            clinic_id=clinic.id, name="Jane Doe", email="jane.doe+delivered@example.com", phone="+1 555 0101"
        )
        quiet = Client(clinic_id=clinic.id, name="Sam Quiet", email="sam.quiet+delivered@example.com")
        blocked = Client(clinic_id=clinic.id, name="Marco Rossi", email="marco.rossi+dropped@example.com")
        db.session.add_all([jane, quiet, blocked])
        db.session.commit()
        now = utcnow()
        delivered = [(5, "processed", {}), (20, "delivered", {"raw": {"response": "250 2.0.0 OK"}})]
        ids = {
            "clicked": add_email(
                jane,
                sent_at=now - timedelta(days=2, hours=3),
                subject="Your intake form",
                kind="intake_form",
                events=[
                    *delivered,
                    (2400, "open", {"machine": True}),
                    (2460, "click", {"url": "https://harbourphysio.example/intake?step=1&ref=email"}),
                ],
            ).id,
            "bounced": add_email(
                jane,
                sent_at=now - timedelta(days=6),
                subject="Appointment reminder",
                to_address="jane.doe@old-provider.example",
                events=[*delivered, (3 * 3600, "bounce", {"reason": BOUNCE})],
            ).id,
            "deferred": add_email(
                jane,
                sent_at=now - timedelta(days=9),
                subject="Your receipt",
                kind="receipt",
                events=[
                    (5, "processed", {}),
                    (60, "deferred", {"attempt": 1, "reason": "421 4.7.0 Try again later"}),
                    (900, "deferred", {"attempt": 2, "reason": "421 4.7.0 Try again later"}),
                    (1800, "delivered", {}),
                ],
            ).id,
        }
        add_email(quiet, sent_at=now - timedelta(days=1), events=delivered)
        add_email(
            blocked,
            sent_at=now - timedelta(days=4),
            subject="Appointment reminder",
            events=[*delivered, (5400, "open", {}), (5460, "spamreport", {})],
        )
        return SeededClinic(jane.id, quiet.id, blocked.id, ids)

    return live.run(work)


def axe_script() -> str:
    """axe-core's source, for `BrowserContext.add_init_script`: every document of that context then
    carries axe from its start, and `axe_violations` need not send its 570 kB for each page."""
    from axe_playwright_python.base import AXE_SCRIPT

    return AXE_SCRIPT


def axe_violations(page: Page) -> str:
    """Run axe-core on the page as it is now (injecting it unless the document has it already);
    return a readable report of what it found."""
    from axe_playwright_python.base import AxeResults
    from axe_playwright_python.sync_playwright import DEFAULT_OPTIONS

    if not page.evaluate("typeof window.axe === 'object' && typeof window.axe.run === 'function'"):
        page.evaluate(axe_script())
    results = AxeResults(page.evaluate("options => axe.run(options)", DEFAULT_OPTIONS))
    return "" if results.violations_count == 0 else results.generate_report()
