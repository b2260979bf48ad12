"""Inputs an attacker chooses: every query parameter, form field and URL part of every route gets a
4xx or a sensible default, never a 500 (a Hypothesis sweep over the URL map), plus the cases that
once answered 500: huge page numbers, non-ASCII digits, ids past 64 bits, deeply nested JSON."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask
from flask_wtf import FlaskForm
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wtforms import FieldList, FormField

from tests.helpers import EVENTS_URL, PASSWORD, email_with_history, login, removal_case, sign
from webapp.extensions import db
from webapp.models import User, WebhookBatch

# Each request starts with an empty `g` (fixtures in conftest.py).
pytestmark = pytest.mark.usefixtures("separate_requests")

WEBAPP = Path(__file__).resolve().parents[1] / "webapp"
BEYOND_64_BITS = str(2**64 + 1)
SIGNED_IN = {
    "clinician": "clinician@a.example",
    "owner": "owner@a.example",
    "support": "support@platform.example",
}


def query_parameter_names() -> set[str]:
    """Every name the app reads from a query string, found in its source (so new ones are swept)."""
    # webapp.params.page_number's default, and the log's version, which the poll's fast path reads
    # from the raw query string in front of Flask (webapp/freshness/fastpoll.py).
    names = {"page", "v"}
    for path in WEBAPP.rglob("*.py"):
        if "providers" in path.parts or "migrations" in path.parts:
            continue  # the sandbox's own API is not our app's
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "get"
                and isinstance(node.func.value, ast.Attribute)
                and node.func.value.attr in ("args", "form")
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                names.add(node.args[0].value)
    return names


def form_field_names(app: Flask) -> set[str]:
    """Every field of every form the app defines."""
    names = {"csrf_token"}
    pending = list(FlaskForm.__subclasses__())
    with app.test_request_context():
        while pending:
            form_class = pending.pop()
            pending.extend(form_class.__subclasses__())
            names.update(_field_names(form_class(meta={"csrf": False})))
    return names


def _field_names(fields) -> list[str]:
    """The names a form posts, nested ones too (a receipt's "lines-0-amount")."""
    names = []
    for field in fields:
        if isinstance(field, FieldList | FormField):
            names += _field_names(field)
        else:
            names.append(field.name)
    return names


# Values that broke routes before, and what else a fuzzer would try.
NASTY = [
    "",
    "0",
    "-1",
    BEYOND_64_BITS,
    "9" * 5000,
    "1e309",
    "nan",
    "²",
    "١٢",
    "𝟗",
    "1-²",
    "abc-١٢",
    "\x00",
    "%00",
    "../../etc/passwd",
    "<script>",
    "a" * 3000,
    "spam-report",
    "decided",
    "yes",
    "y",
    "9999-12-31T23:00",  # past the calendar's end once read in a zone behind UTC
    "0001-01-01T00:00",
    "appointment_reminder",
]
values = st.one_of(
    st.sampled_from(NASTY),
    st.integers(min_value=-(2**80), max_value=2**80).map(str),
    st.text(max_size=40),
)


def test_the_sweep_knows_the_apps_parameters(app):
    assert {"page", "q", "v", "status", "view"} <= query_parameter_names()
    assert {"email", "password", "kind", "subject", "to_address", "role", "note"} <= form_field_names(app)
    assert {"lines-0-service", "lines-2-day", "lines-1-amount", "brand_colour"} <= form_field_names(app)


@pytest.mark.parametrize("path", ["/clients", "/clinic/audit", "/support/removal-requests"])
@pytest.mark.parametrize("page", [BEYOND_64_BITS, "9" * 5000, "²", "-3", "0", "x"])
def test_any_page_number_is_a_page(app, world, path, page):
    client = app.test_client()
    login(client, "support@platform.example" if path.startswith("/support") else "owner@a.example")
    response = client.get(path, query_string={"page": page})
    assert response.status_code == 200


@pytest.mark.parametrize("version", ["1-²", "1-١٢٣", "1-" + "9" * 5000, "x-𝟗", "-", "--"])
def test_a_strange_log_version_renders_the_log(app, world, version):
    client = app.test_client()
    login(client, "clinician@a.example")
    response = client.get(f"/clients/{world.client_a.id}/emails", query_string={"v": version})
    assert response.status_code == 200


@pytest.mark.parametrize("number", [BEYOND_64_BITS, str(2**31), "9" * 400])
def test_an_id_beyond_the_id_columns_is_not_found(app, world, number):
    client = app.test_client()
    login(client, "owner@a.example")
    assert client.get(f"/clients/{number}").status_code == 404
    assert client.post(f"/emails/{number}/resend").status_code == 404
    assert client.post(f"/clinic/users/{number}/deactivate").status_code == 404


@pytest.mark.parametrize("depth", [50, 100_000])
def test_deeply_nested_json_in_a_signed_webhook_is_a_bad_request(signed_app, key, depth):  # noqa: F811
    nested = "[" * depth + "]" * depth
    body = (
        '[{"email": "a@example.com", "timestamp": 1767348000, "event": "delivered", "x": ' + nested + "}]"
    ).encode()
    response = signed_app.test_client().post(EVENTS_URL, data=body, headers=sign(key, body))
    assert response.status_code == 400
    assert db.session.query(WebhookBatch).count() == 0
    flat = json.dumps([{"email": "a@example.com", "timestamp": 1767348000, "event": "x", "category": ["a"]}])
    response = signed_app.test_client().post(EVENTS_URL, data=flat, headers=sign(key, flat.encode()))
    assert response.status_code == 200


def roles_for(endpoint: str) -> list[str | None]:
    """Who to send: the role that gets past the access check, and a stranger."""
    area = endpoint.split(".")[0]
    staff = {"clients": ["clinician", "owner"], "emails": ["clinician", "owner"], "owner": ["owner"]}
    return [None, *staff.get(area, ["support"] if area == "support" else list(SIGNED_IN))]


@pytest.fixture
def sweep(app, world):
    """What the sweep draws from: parameter names and ids of real objects of clinic A."""
    email = email_with_history(world.client_a)
    case = removal_case(world.client_a.email)
    return {
        "query": sorted(query_parameter_names()),
        "form": sorted(form_field_names(app)),
        "ids": {
            "client_id": world.client_a.id,
            "email_id": email.id,
            "user_id": world.users["clinician"].id,
            "case_id": case.id,
            "alert_id": 1,
            "incident_id": 1,
        },
    }


def test_no_input_to_any_route_answers_500(app, world, sweep):
    rules = [
        (rule, method)
        for rule in sorted(app.url_map.iter_rules(), key=lambda rule: rule.rule)
        if rule.endpoint != "static"
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"})
    ]
    assert len(rules) > 20
    for rule, method in rules:
        sweep_route(app, sweep, rule, method)


def sweep_route(app, sweep, rule, method: str) -> None:
    """Send one route ten requests of Hypothesis's choosing; none may answer 500."""

    @settings(
        max_examples=10,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        role = data.draw(st.sampled_from(roles_for(rule.endpoint)), label="role")
        filled = {
            name: data.draw(
                st.one_of(st.just(sweep["ids"].get(name, "failed")), st.integers(0, 2**70)), label=name
            )
            for name in sorted(rule.arguments)
        }
        query = data.draw(st.dictionaries(st.sampled_from(sweep["query"]), values, max_size=4), label="query")
        form = data.draw(st.dictionaries(st.sampled_from(sweep["form"]), values, max_size=6), label="form")
        htmx = data.draw(st.booleans(), label="htmx")
        url = rule.build(filled, append_unknown=False)[1]
        client = app.test_client()
        if role:
            client.post("/login", data={"email": SIGNED_IN[role], "password": PASSWORD})
        headers = {"HX-Request": "true", "HX-Trigger": "email-log"} if htmx else {}
        response = client.open(url, method=method, query_string=query, data=form, headers=headers)
        assert response.status_code < 500, (role, method, url, query, form, response.status_code)
        # An owner in the sweep may have deactivated a user: the next example signs in as anyone.
        db.session.rollback()
        db.session.execute(sa.update(User).values(active=True))
        db.session.commit()

    check()
