"""Every page each role reaches, at 1280 and 375 px: no horizontal scroll, and nothing axe-core finds.

Each role's pages are found by following the links a person can follow from where they land, plus
the few reached through a form or a button (the printable export, the help for each status, the
resend confirmation, the error pages). A GET page the app serves that no role reaches fails the
test: a new page is covered the day it is added.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import parse_qsl, urlsplit

import pytest
from flask import Flask
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.e2e.helpers import LiveServer, axe_script, axe_violations
from tests.helpers import BOUNCED, DELIVERED, PASSWORD, add_email

WIDTHS = (1280, 375)
USERS = {"clinician": "clinician@example.com", "owner": "owner@example.com", "support": "support@example.com"}
LONG_ADDRESS = "a.very.long.address.of.a.client.who.likes.long.names@subdomain.of.an.example.com"
LONG_USER = "reception.desk.of.the.harbour.physiotherapy.and.massage.clinic@example.com"

# GET endpoints that are not pages a person opens: files, machine answers, parts of a page.
NOT_PAGES = {
    "static",
    "ops.healthz",
    "operations.prometheus",
    "clients.email_log",  # the log's own refresh, inside the client's page
    "clients.email_stream",
    "clients.export_csv",  # a download
    "emails.as_sent_html",  # an email's HTML part, inside the frame of the email as sent
    "emails.as_sent_ics",  # a download
    "clients.preview_html",  # a previewed email's HTML part, only ever inside the preview's frame
    "auth.index",  # only redirects to where each role works
}
# The pages each role must reach (the crawl may find more); together, every page of the app.
PAGES = {
    "anonymous": {"auth.login_form"},
    "clinician": {
        "attention.index",
        "clients.index",
        "clients.show",
        "clients.export_form",
        "clients.export_print",
        "emails.timeline",
        "emails.as_sent",
        "help.index",
        "help.status",
    },
    "support": {
        "support.queue",
        "support.case",
        "support.email_timeline",
        "support.incident",
        "operations.overview",
        "help.index",
        "help.status",
    },
}
PAGES["owner"] = PAGES["clinician"] | {
    "owner.users",
    "owner.audit",
    "owner.deliverability_view",
    "owner.settings",
}
# What makes a page too wide: the innermost elements, and the elements whose own text, past the
# viewport's right edge.
WIDEST_ELEMENTS = """width => {
  const past = rect => rect.right > width + 0.5;
  const found = new Set();
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const range = document.createRange();
    range.selectNodeContents(node);
    if (node.textContent.trim() && past(range.getBoundingClientRect())) found.add(node.parentElement);
  }
  for (const el of document.body.querySelectorAll("*")) {
    const inner = !Array.from(el.children).some(child => past(child.getBoundingClientRect()));
    if (inner && past(el.getBoundingClientRect())) found.add(el);
  }
  return Array.from(found).slice(0, 6).map(
    el => `<${el.tagName.toLowerCase()} class="${el.className}"> ${el.textContent.trim().slice(0, 60)}`
  );
}"""
# An email's HTML part as a mail app gets it: a table layout wider than a phone, inline CSS.
WIDE_EMAIL = (
    '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Reminder</title></head>'
    '<body style="margin:0;font-family:Arial,sans-serif"><table role="presentation" width="640" '
    'style="width:640px;border-collapse:collapse"><tr><td style="background:#1f5fbf;color:#fff;'
    'padding:16px">Clinic</td></tr><tr><td style="padding:16px">Your appointment is on Monday at '
    '3 pm. <a href="https://example.com/intake">Fill in the form</a></td></tr></table></body></html>'
)
# Pages of one kind that differ only in their data: the crawl opens this many of each.
PER_KIND = 3


@dataclass
class World:
    """Ids of what the pages must show (objects would be tied to the seeding session)."""

    long_client_id: int
    failed_email_id: int  # resent to a corrected address
    unsent_failed_id: int  # failed, not resent yet
    alerted_email_id: int
    case_ids: list[int]
    incident_ids: list[int]


def seed_world(live: LiveServer) -> World:
    """The demo clinic, plus what makes pages long or wide: long addresses, cases, an alert."""
    import sqlalchemy as sa

    from webapp.extensions import db
    from webapp.models import Client, Clinic, EmailContent, Incident, RemovalRequest, User, utcnow
    from webapp.services import accounts, alerts, demo, maintenance, sending

    def work() -> World:
        demo.seed(PASSWORD)
        clinic = db.session.query(Clinic).filter_by(name=demo.DEMO_CLINIC).one()
        owner = db.session.query(User).filter_by(email=USERS["owner"]).one()
        accounts.create_user(LONG_USER, "Reception Desk", "clinician", PASSWORD, clinic, actor=owner)
        person = Client(clinic_id=clinic.id, name="Long Address", email=LONG_ADDRESS, phone="+1 555 0199")
        db.session.add(person)
        db.session.commit()
        failed = add_email(person, subject="A subject line that is rather long, as some are", events=BOUNCED)
        sending.resend(
            failed, to_address=LONG_ADDRESS.replace("a.very", "the.very"), update_client=False, by=owner
        )
        if failed.content is None:  # a copy as sent with an HTML part, wide and long, and its .ics
            db.session.add(
                EmailContent(
                    email_id=failed.id,
                    body_html=WIDE_EMAIL,
                    reply_to=LONG_ADDRESS,
                    calendar_ics="BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n",
                )
            )
            failed.body = "Dear Long Address,\n\n" + "A line of the text part that runs on and on. " * 6
            db.session.commit()
        unsent = add_email(person, subject="Your intake form", kind="intake_form", events=BOUNCED)
        sent_at = utcnow() - timedelta(hours=2)
        stuck = add_email(
            person, sent_at=sent_at, subject="Your receipt", kind="receipt", events=DELIVERED[:1]
        )
        maintenance.flag_stuck_emails(utcnow())  # support's alerts, as the sweep raises them
        cases = []
        for n, status in enumerate(("pending", "rejected")):
            case = RemovalRequest(
                from_address=LONG_ADDRESS,
                subject="Please remove me from the spam list, I reported your email by mistake",
                body_excerpt="I reported it by mistake. " + "x" * 300,
                message_id=f"<a-very-long-message-id-{n}-0123456789abcdef0123456789abcdef@mail.example.com>",
                fingerprint=f"every-page-{n}",
                verdict="verified",
                evidence={
                    "reasons": [],
                    "dkim": [{"d": "subdomain.of.an.example.com", "result": "pass", "why": ""}],
                },
                status=status,
                decision_note="See https://support.example.com/tickets/" + "0123456789" * 8,
            )
            db.session.add(case)
            cases.append(case)
        alerts.alert_operators("provider_auth", "The email provider refused our API key (" + "k" * 60 + ").")
        db.session.commit()
        incidents = db.session.execute(sa.select(Incident.id).order_by(Incident.id)).scalars().all()
        return World(person.id, failed.id, unsent.id, stuck.id, [case.id for case in cases], incidents)

    return live.run(work)


def endpoint_of(app: Flask, url: str) -> str | None:
    """The endpoint a same-site path (with its query) goes to, or None."""
    from werkzeug.exceptions import HTTPException

    parts = urlsplit(url)
    try:
        endpoint, _ = app.url_map.bind("localhost").match(parts.path, method="GET")
    except HTTPException:
        return None
    return endpoint


def crawl(page: Page, live: LiveServer, extra: list[str], check: Callable[[str], None]) -> dict[str, str]:
    """Open every page reachable by links from the landing page (PER_KIND of each kind), and
    `extra`, calling `check` with each new page's path while it is open; return {path: endpoint}
    of the pages opened."""
    found: dict[str, str] = {}
    kinds: Counter[tuple[str, tuple[str, ...]]] = Counter()
    waiting = deque(["/", *extra])
    while waiting:
        url = waiting.popleft()
        page.goto(live.url + url)
        here = urlsplit(page.url)
        path = here.path + (f"?{here.query}" if here.query else "")
        if path in found:
            continue
        found[path] = endpoint_of(live.app, path) or "?"
        check(path)
        links = page.eval_on_selector_all("a[href]", "links => links.map(link => link.href)")
        for link in links:
            parts = urlsplit(link)
            if f"{parts.scheme}://{parts.netloc}" != live.url:
                continue  # tel:, mailto: and other sites
            target = parts.path + (f"?{parts.query}" if parts.query else "")
            endpoint = endpoint_of(live.app, target)
            if endpoint is None or endpoint in NOT_PAGES or target in found or target in waiting:
                continue
            kind = (endpoint, tuple(sorted(key for key, _ in parse_qsl(parts.query))))
            if kinds[kind] >= PER_KIND:
                continue
            kinds[kind] += 1
            waiting.append(target)
    return found


def new_context(browser: Browser, width: int) -> BrowserContext:
    """A phone's context below 600 px, a desktop's above; each page of it comes with axe-core."""
    if width < 600:
        context = browser.new_context(
            viewport={"width": width, "height": 812}, is_mobile=True, has_touch=True
        )
    else:
        context = browser.new_context(viewport={"width": width, "height": 900})
    context.set_default_timeout(10_000)
    context.add_init_script(axe_script())
    return context


def sign_in(page: Page, live: LiveServer, email: str) -> None:
    page.goto(f"{live.url}/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: not url.endswith("/login"))


def problems_of(page: Page, width: int, where: str) -> list[str]:
    """What is wrong with the page as it is now: a horizontal scroll, axe's findings."""
    found = []
    scroll_width, inner_width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    if scroll_width > min(width, inner_width):
        wide = page.evaluate(WIDEST_ELEMENTS, width)
        found.append(f"{where} at {width} px: {scroll_width} px wide; sticking out: {wide}")
    report = axe_violations(page)
    if report:
        found.append(f"{where} at {width} px, axe:\n{report}")
    return found


def check_pages(
    browser: Browser, live: LiveServer, email: str | None, paths: list[str], widths: tuple[int, ...]
) -> list[str]:
    """Open each path at each width (signed in as `email`); return what is wrong."""
    found = []
    for width in widths:
        context = new_context(browser, width)
        page = context.new_page()
        try:
            if email:
                sign_in(page, live, email)
            for path in paths:
                page.goto(live.url + path)
                found += problems_of(page, width, path)
        finally:
            context.close()
    return found


def states_of_the_client_page(browser: Browser, live: LiveServer, world: World) -> list[str]:
    """The client's page as a clinician uses it: a timeline open, the help beside it, the resend
    confirmation."""
    found = []
    for width in WIDTHS:
        context = new_context(browser, width)
        page = context.new_page()
        try:
            sign_in(page, live, USERS["clinician"])
            page.goto(f"{live.url}/clients/{world.long_client_id}")
            failed = world.failed_email_id
            page.locator(f"#toggle-{failed}").click()
            expect(page.locator(f"#timeline-{failed}")).to_be_visible()
            page.locator(f"#badge-{failed}").click()
            expect(page.locator("#help-panel")).to_be_visible()
            found += problems_of(page, width, "the client's page with a timeline and the help open")
            page.locator(f"#email-{world.unsent_failed_id}").get_by_role("button", name="Resend…").click()
            page.wait_for_url(f"**/emails/{world.unsent_failed_id}/resend")
            found += problems_of(page, width, "the resend confirmation")
        finally:
            context.close()
    return found


def test_every_page_of_the_app_is_some_roles_page(make_app):
    app = make_app()
    pages = {rule.endpoint for rule in app.url_map.iter_rules() if "GET" in rule.methods}
    assert pages - NOT_PAGES == set().union(*PAGES.values())


def pages_behind_forms(role: str, world: World) -> list[str]:
    """The pages a role reaches through a form, a button or a bookmark rather than a link."""
    from webapp import statuses
    from webapp.models import utcnow

    paths = ["/no-such-page", f"/emails/{world.failed_email_id}/resend"]  # the 404 and 405 pages
    if role == "anonymous":
        return ["/login", *paths]
    # A badge's help opens beside the log; without JavaScript it is a page of its own.
    paths += sorted({f"/help/statuses/{status.help_key}" for status in statuses.ALL})
    if role == "support":
        paths += ["/support/removal-requests?view=decided", f"/support/emails/{world.alerted_email_id}"]
        paths += [f"/support/incidents/{incident_id}" for incident_id in world.incident_ids]
        return paths + [f"/support/removal-requests/{case_id}" for case_id in world.case_ids]
    today = utcnow().date()
    client = world.long_client_id
    return [
        *paths,
        f"/clients/{client}",
        f"/emails/{world.failed_email_id}/timeline",
        f"/emails/{world.failed_email_id}/as-sent",
        f"/clients/{client}/export/print?from={today - timedelta(days=30)}&to={today}",
    ]


@pytest.mark.parametrize("role", ["anonymous", "clinician", "owner", "support"])
def test_every_page_fits_375_and_1280_pixels_and_axe_finds_nothing(live_server, browser, role):
    world = seed_world(live_server)
    wide, *narrower = WIDTHS
    context = new_context(browser, wide)
    page = context.new_page()
    extra = pages_behind_forms(role, world)
    problems: list[str] = []
    try:
        if role != "anonymous":
            sign_in(page, live_server, USERS[role])
        # Each page is checked at the widest width as the crawl opens it, at the others after.
        found = crawl(page, live_server, extra, lambda path: problems.extend(problems_of(page, wide, path)))
    finally:
        context.close()
    missing = PAGES[role] - set(found.values())
    assert not missing, f"{role} never reached {missing}; found {found}"

    problems += check_pages(browser, live_server, USERS.get(role), list(found), tuple(narrower))
    if role == "clinician":
        problems += states_of_the_client_page(browser, live_server, world)
    assert not problems, "\n\n".join([*problems, "Pages checked: " + ", ".join(found)])
