"""Requests: CSRF on every state-changing request (webhooks exempt but gated by their own secret),
trusted hosts, request size limits."""

from __future__ import annotations

import re

import pytest
from flask.testing import FlaskClient

from tests.helpers import PASSWORD
from webapp.extensions import csrf

# Every page rendered here is checked for CSP breakers; each request starts with an empty `g` (conftest.py).
pytestmark = pytest.mark.usefixtures("separate_requests", "html_guard")

WEBHOOK_VIEWS = {
    "webapp.webhooks.routes.provider_events",
    "webapp.webhooks.inbound.sendgrid_inbound",
    "webapp.webhooks.inbound.postmark_inbound",
}


def token_of(client: FlaskClient, path: str = "/login") -> str:
    """Return the CSRF token a page hands out (the login form's, or the sign-out form's)."""
    html = client.get(path).get_data(as_text=True)
    return re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html).group(1)


def signed_in_with_token(app, email: str | None) -> FlaskClient:
    client = app.test_client()
    if email:
        response = client.post(
            "/login", data={"email": email, "password": PASSWORD, "csrf_token": token_of(client)}
        )
        assert response.status_code == 302
    return client


@pytest.fixture
def protected(app, world, make_app):
    """The app with CSRF protection on, as in production, and the inbound secret set."""
    return make_app(WTF_CSRF_ENABLED=True, INBOUND_WEBHOOK_SECRET="inbound-secret")


def test_only_the_webhooks_are_exempt_from_csrf(protected):
    assert csrf._exempt_views == WEBHOOK_VIEWS
    assert not csrf._exempt_blueprints
    assert protected.config["WTF_CSRF_CHECK_DEFAULT"] is True


@pytest.mark.parametrize(
    "email", [None, "clinician@a.example", "owner@a.example", "support@platform.example"]
)
def test_every_post_without_a_valid_token_is_refused(protected, world, email):
    posts = [
        rule for rule in protected.url_map.iter_rules() if rule.methods & {"POST", "PUT", "PATCH", "DELETE"}
    ]
    assert len(posts) >= 10
    ids = {
        "client_id": world.client_a.id,
        "email_id": 1,
        "user_id": world.users["clinician"].id,
        "case_id": 1,
        "alert_id": 1,
        "incident_id": 1,
        "provider_name": "sendgrid",  # the configured wire format
    }
    for rule in posts:
        url = rule.build({name: ids[name] for name in rule.arguments}, append_unknown=False)[1]
        client = signed_in_with_token(protected, email)
        for data in ({}, {"csrf_token": "forged"}):
            response = client.post(url, data=data)
            view = protected.view_functions[rule.endpoint]
            if f"{view.__module__}.{view.__name__}" in WEBHOOK_VIEWS:
                assert response.status_code in (401, 403), url  # gated by their own signature or secret
            else:
                assert response.status_code == 400, url


def test_a_valid_token_works_in_the_form_and_in_the_htmx_header(protected, world):
    client = signed_in_with_token(protected, "clinician@a.example")
    page = client.get("/clients").get_data(as_text=True)
    header_token = re.search(r'hx-headers=\'\{"X-CSRFToken": "([^"]+)"\}\'', page).group(1)
    assert client.post("/logout", headers={"X-CSRFToken": header_token}).status_code == 302
    client = signed_in_with_token(protected, "clinician@a.example")
    assert client.post("/logout", data={"csrf_token": token_of(client, "/clients")}).status_code == 302


def test_a_token_from_before_sign_in_is_not_valid_after_it(protected, world):
    client = protected.test_client()
    before = token_of(client)
    client.post("/login", data={"email": "clinician@a.example", "password": PASSWORD, "csrf_token": before})
    assert client.post("/logout", data={"csrf_token": before}).status_code == 400


def test_an_untrusted_host_is_refused_when_trusted_hosts_are_set(app, make_app):
    hosted = make_app(TRUSTED_HOSTS="clinic.example, www.clinic.example")
    client = hosted.test_client()
    assert client.get("/login", headers={"Host": "evil.example"}).status_code == 400
    assert client.get("/login", headers={"Host": "clinic.example"}).status_code == 200
    assert client.get("/login", headers={"Host": "www.clinic.example"}).status_code == 200


def test_request_bodies_are_limited(app, make_app):
    client = app.test_client()
    too_big = "x" * (app.config["MAX_CONTENT_LENGTH"] + 1)
    assert client.post("/login", data={"email": too_big, "password": "x"}).status_code == 413
    # A single form field is limited far lower (Flask's MAX_FORM_MEMORY_SIZE).
    field = "x" * 600_000
    assert (
        client.post(
            "/login", data={"email": field, "password": "x"}, content_type="multipart/form-data"
        ).status_code
        == 413
    )
    small_inbound = make_app(INBOUND_MAX_BYTES=10_000)
    response = small_inbound.test_client().post(
        "/webhooks/sendgrid/inbound", data={"email": "x" * 20_000}, content_type="multipart/form-data"
    )
    assert response.status_code == 413
