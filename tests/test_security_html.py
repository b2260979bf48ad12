"""Every HTML page keeps the strict CSP: no inline script or style, no event-handler attributes;
htmx is configured so that nothing needs eval or inline style and nothing lands in localStorage;
the usual security headers. The page checker (`scan`) and the data helpers the other security
tests use are in tests/helpers.py; the `html_guard` and `separate_requests` fixtures, which a
module turns on for all its tests with `pytestmark`, are in conftest.py."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from tests.helpers import add_content, email_with_history, login, removal_case, scan
from webapp.extensions import db
from webapp.models import Email, Incident, RemovalRequest
from webapp.services import alerts

# Every page rendered here is checked for CSP breakers; each request starts with an empty `g` (conftest.py).
pytestmark = pytest.mark.usefixtures("separate_requests", "html_guard")


def own_pages(world, email: Email, case: RemovalRequest, incident_id: int) -> dict[str, list[str]]:
    """Every GET route, filled with objects each role may see, per role."""
    from flask import current_app

    fillers = {
        "client_id": world.client_a.id,
        "email_id": email.id,
        "user_id": world.users["clinician"].id,
        "case_id": case.id,
        "incident_id": incident_id,
        "key": "failed",
        "filename": "css/app.css",
        "token": "0" * 32,  # a preview's frame: expired, or never made
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
    add_content(email, '<p style="color:red">Hi</p>')  # its copy as sent, with an HTML part to frame
    case = removal_case(world.client_a.email)
    # An alert about the email: its incident, and support's page of the email, have something to show.
    alerts.alert_operators("email_stuck", "Stuck: <b>not markup</b>", email)
    db.session.commit()
    incident_id = db.session.execute(sa.select(Incident.id)).scalar_one()
    for role, urls in own_pages(world, email, case, incident_id).items():
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
        f"/support/incidents/{incident_id}",
        f"/support/emails/{email.id}",
        "/support/operations",
        "/login",
        f"/emails/{email.id}/as-sent",
        f"/emails/{email.id}/as-sent.html",  # under its own sandboxing policy (html_guard)
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
