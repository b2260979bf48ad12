"""Every HTML page keeps the strict CSP: no inline script or style, no event-handler attributes;
htmx is configured so that nothing needs eval or inline style and nothing lands in localStorage;
the usual security headers. Also the page checker and data helpers the other security tests use.

`html_guard` and `separate_requests` are autouse here and in every module that imports them: each
HTML response any test of that module renders is parsed and checked, and each request starts with
an empty `g`."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from html.parser import HTMLParser

import pytest
from flask import g, request, request_finished, request_started

from tests.conftest import login
from webapp.extensions import db
from webapp.models import Client, Email, RemovalRequest
from webapp.providers.base import ProviderEvent
from webapp.services import sending
from webapp.services.events import apply_events

URL_ATTRIBUTES = {"href", "src", "action", "formaction", "hx-get", "hx-post", "data", "srcdoc"}


class PageScan(HTMLParser):
    """Collect every element with its attribute names, and every CSP-breaking construct."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: Counter[tuple[str, tuple[str, ...]]] = Counter()
        self.problems: list[str] = []
        self.meta: dict[str, str] = {}
        self.body_attributes: dict[str, str] = {}
        self.scripts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        self.elements[(tag, tuple(sorted(values)))] += 1
        if tag == "script":
            src = values.get("src", "")
            self.scripts.append(src)
            if not src:
                self.problems.append("inline <script>")
            elif not src.startswith("/static/"):
                self.problems.append(f"script from elsewhere: {src}")
        if tag == "style":
            self.problems.append("<style> element")
        if tag == "meta" and "name" in values:
            self.meta[values["name"]] = values.get("content", "")
        if tag == "body":
            self.body_attributes = values
        for name, value in values.items():
            if name.startswith("on"):
                self.problems.append(f"event handler attribute {name}= on <{tag}>")
            if name == "style":
                self.problems.append(f"style= attribute on <{tag}>")
            if name.startswith(("hx-on", "data-hx-on")):
                self.problems.append(f"{name}= needs eval")
            scheme = value.strip().lower().replace("\t", "").replace("\n", "")
            if name in URL_ATTRIBUTES and scheme.startswith(("javascript:", "vbscript:", "data:text/html")):
                self.problems.append(f"script URL in {name}= on <{tag}>")

    handle_startendtag = handle_starttag


def scan(html: str) -> PageScan:
    """Parse one page."""
    parser = PageScan()
    parser.feed(html)
    parser.close()
    return parser


@pytest.fixture(autouse=True)
def separate_requests() -> Iterator[None]:
    """Give each request an empty `g`, as in production.

    The `app` fixture keeps one app context open for the whole test, and Flask reuses it for every
    test-client request, so `g` would carry the signed-in user (Flask-Login) and the CSRF token
    (Flask-WTF) from one client's request into another's.
    """

    def clear(sender: object, **extra: object) -> None:
        for name in list(g):
            g.pop(name)

    request_started.connect(clear)
    yield
    request_started.disconnect(clear)


@pytest.fixture(autouse=True)
def html_guard() -> Iterator[list[tuple[str, int, str]]]:
    """Check every HTML page rendered during the test for CSP breakers and the CSP header."""
    pages: list[tuple[str, int, str]] = []
    problems: list[str] = []

    def check(sender: object, response: object, **extra: object) -> None:
        if response.mimetype != "text/html" or response.is_streamed:
            return
        html = response.get_data(as_text=True)
        pages.append((request.path, response.status_code, html))
        policy = response.headers.get("Content-Security-Policy", "")
        if "default-src 'self'" not in policy or "unsafe-" in policy:
            problems.append(f"{request.path}: weak CSP {policy!r}")
        problems.extend(f"{request.path}: {problem}" for problem in scan(html).problems)

    request_finished.connect(check)
    yield pages
    request_finished.disconnect(check)
    assert not problems, "\n".join(sorted(set(problems))[:50])


def email_with_history(
    client: Client,
    *,
    subject: str = "Appointment reminder",
    body: str = "See you on Monday",
    deferral: str = "421 4.7.0 Try again later",
    response: str = "250 2.0.0 OK",
    url: str = "https://example.com/intake-form",
    bounce: str = "550 5.1.1 The email account does not exist",
    sent_by: object = None,
) -> Email:
    """Send an email through the service and give it a full, failed history of provider events."""
    email = sending.queue_email(client, kind="free_text", subject=subject, body=body, sent_by=sent_by)
    start = email.created_at
    ids = {"app_message_id": email.app_message_id}
    apply_events(
        email,
        [
            ProviderEvent("processed", start + timedelta(seconds=1), **ids),
            ProviderEvent("deferred", start + timedelta(seconds=2), reason=deferral, attempt=1, **ids),
            ProviderEvent("delivered", start + timedelta(seconds=3), raw={"response": response}, **ids),
            ProviderEvent("open", start + timedelta(seconds=40), machine=True, **ids),
            ProviderEvent("click", start + timedelta(seconds=60), url=url, **ids),
            ProviderEvent("bounce", start + timedelta(seconds=90), reason=bounce, **ids),
        ],
        source="webhook",
    )
    db.session.commit()
    return email


def removal_case(address: str, *, verdict: str = "verified", tag: str = "1") -> RemovalRequest:
    """File a removal case directly (as the inbound webhook would), for page tests."""
    case = RemovalRequest(
        from_address=address,
        subject="Please remove me",
        body_excerpt="I reported it by mistake.",
        message_id=f"<{tag}@mail.example>",
        fingerprint=f"test-{tag}-{address}"[:64],
        verdict=verdict,
        evidence={"verified_by": "dkim", "reasons": [], "dkim": [], "receiver_dkim": "none"},
    )
    db.session.add(case)
    db.session.commit()
    return case


def own_pages(world, email: Email, case: RemovalRequest) -> dict[str, list[str]]:
    """Every GET route, filled with objects each role may see, per role."""
    from flask import current_app

    fillers = {
        "client_id": world.client_a.id,
        "email_id": email.id,
        "user_id": world.users["clinician"].id,
        "case_id": case.id,
        "key": "failed",
        "filename": "css/app.css",
    }
    urls = []
    for rule in current_app.url_map.iter_rules():
        if "GET" in rule.methods:
            urls.append(rule.build({name: fillers[name] for name in rule.arguments}, append_unknown=False)[1])
    return {role: urls for role in ("clinician", "owner", "support", None)}


def test_the_checker_catches_what_the_csp_would_block():
    bad = scan(
        '<script>alert(1)</script><script src="https://cdn.example/x.js"></script><style>p{}</style>'
        '<p style="color:red" onclick="x()"><a href=" javascript:alert(1)">x</a>'
        '<div hx-on:click="x()"></div><img src=x onerror=alert(1)>'
    )
    assert len(bad.problems) == 8, bad.problems
    assert scan('<script src="/static/js/app.js" defer></script><p class="x">ok</p>').problems == []


def test_every_page_of_every_role_is_free_of_inline_script_and_style(app, world, html_guard):
    email = email_with_history(world.client_a)
    case = removal_case(world.client_a.email)
    for role, urls in own_pages(world, email, case).items():
        client = app.test_client()
        if role:
            login(client, world.users[role].email)
        for url in urls:
            for headers in ({}, {"HX-Request": "true"}):
                response = client.get(url, headers=headers)
                assert response.status_code < 500, url
    rendered = {path for path, status, _ in html_guard if status == 200}
    # The pages that matter were really rendered (not only error pages).
    for path in (
        "/clients",
        f"/clients/{world.client_a.id}",
        "/help",
        "/clinic/users",
        "/clinic/audit",
        "/support/removal-requests",
        f"/support/removal-requests/{case.id}",
        "/login",
    ):
        assert path in rendered


def test_htmx_runs_without_eval_inline_styles_or_a_history_cache(app, world):
    client = app.test_client()
    login(client, world.users["clinician"].email)
    page = scan(client.get("/clients").get_data(as_text=True))
    config = json.loads(page.meta["htmx-config"])
    assert config["allowEval"] is False
    assert config["includeIndicatorStyles"] is False
    assert config["historyCacheSize"] == 0
    assert config["allowScriptTags"] is False
    assert config["selfRequestsOnly"] is True
    # The CSRF token travels with every htmx request; history snapshots are off on the body too.
    assert "X-CSRFToken" in json.loads(page.body_attributes["hx-headers"])
    assert page.body_attributes.get("hx-history") == "false"
    assert page.scripts == ["/static/vendor/htmx-2.0.10.min.js", "/static/js/app.js"]


def test_the_vendored_htmx_is_the_pinned_2_0_release(app):
    response = app.test_client().get("/static/vendor/htmx-2.0.10.min.js")
    assert response.status_code == 200
    assert 'version:"2.0.10"' in response.get_data(as_text=True)
    response.close()


def test_security_headers_on_authenticated_pages(app, world):
    client = app.test_client()
    login(client, world.users["owner"].email)
    for path in (
        "/clients",
        f"/clients/{world.client_a.id}",
        f"/clients/{world.client_a.id}/emails",
        "/help",
        "/clinic/users",
        "/clinic/audit",
    ):
        response = client.get(path)
        assert response.status_code == 200, path
        headers = response.headers
        policy = dict(
            (part.split()[0], part.split()[1:])
            for part in headers["Content-Security-Policy"].split(";")
            if part.strip()
        )
        assert policy["default-src"] == ["'self'"]
        assert policy["script-src"] == ["'self'"] and policy["style-src"] == ["'self'"]
        assert policy["object-src"] == ["'none'"] and policy["frame-ancestors"] == ["'none'"]
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["X-Frame-Options"] == "DENY"
        assert headers["Referrer-Policy"] == "same-origin"
        assert headers["Cache-Control"] == "no-store"
        assert "HX-Request" in headers.get_all("Vary") or "HX-Request" in headers["Vary"]


def test_hsts_is_sent_over_https(app):
    response = app.test_client().get("/login", base_url="https://localhost")
    assert response.headers["Strict-Transport-Security"].startswith("max-age=31536000")
    assert "Strict-Transport-Security" not in app.test_client().get("/login").headers
