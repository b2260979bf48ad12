"""Tenant isolation, proven by a sweep: every rule of the URL map, every method it allows, every
role, URL parameters filled with another clinic's objects. A new route is swept without editing
this file; a new kind of URL parameter is filled with each of the other clinic's ids in turn."""

from __future__ import annotations

import itertools
import time

import pytest
import sqlalchemy as sa
from flask.testing import FlaskClient

from tests.helpers import email_with_history, login, removal_case
from webapp.extensions import db
from webapp.freshness import counters as changes
from webapp.models import Email, RemovalRequest, User

# Every page rendered here is checked for CSP breakers; each request starts with an empty `g` (conftest.py).
pytestmark = pytest.mark.usefixtures("separate_requests", "html_guard")

ROLES = ("anonymous", "clinician", "owner", "support")
SECRET_SUBJECT = "Biopsy results for Bob 7c1f"
SECRET_BODY = "Your results are ready 9e2a"
# Parameters that name an object owned by a clinic: another clinic's id must answer 404 (or 403).
CLINIC_OBJECTS = {"client_id", "email_id", "user_id"}
# Rules anyone may reach, with what each role gets.
PUBLIC = {
    "static": lambda role, method: {200},
    "ops.healthz": lambda role, method: {200},
    "auth.login_form": lambda role, method: {200} if role == "anonymous" else {302},
    "auth.login": lambda role, method: {400},  # an empty form
    # Prometheus text: support or a scraper's token (none here); 401 asks the scraper for one.
    "operations.prometheus": lambda role, method: {"support": {200}, "anonymous": {401}}.get(role, {404}),
    "operations.overview": lambda role, method: {"support": {200}, "anonymous": {302, 204}}.get(role, {404}),
}


@pytest.fixture
def other_clinic(app, world):
    """Clinic B's data, which nobody of clinic A, support or the public may see."""
    email = email_with_history(world.client_b, subject=SECRET_SUBJECT, body=SECRET_BODY)
    # Mark B's log as rendered, so a poll with B's marker could only be answered from Redis.
    marker = changes.current_marker(world.clinic_b.id, world.client_b.id)
    case = removal_case(world.client_b.email)
    return {"email": email, "case": case, "marker": marker}


def fillers(world, other_clinic) -> dict[str, list[object]]:
    """Values for each URL parameter: the other clinic's objects, or harmless values."""
    return {
        "client_id": [world.client_b.id],
        "email_id": [other_clinic["email"].id],
        "user_id": [world.users["clinician_b"].id, world.users["owner_b"].id],
        "case_id": [other_clinic["case"].id],  # cases belong to no clinic: support's own work
        "key": ["failed"],
        "filename": ["css/app.css"],
        "provider_name": ["sendgrid"],  # the configured wire format; others are 404 (provider route tests)
    }


def secrets_of_b(world, role: str, endpoint: str) -> list[str]:
    """What must never appear in a response to this role."""
    secrets = [
        world.client_b.name,
        SECRET_SUBJECT,
        SECRET_BODY,
        world.users["clinician_b"].name,
        world.users["owner_b"].name,
        world.users["clinician_b"].email,
        world.users["owner_b"].email,
    ]
    # A removal case is about one address: support sees that address, and only on its own pages.
    if not (role == "support" and endpoint.startswith("support.")):
        secrets.append(world.client_b.email)
    return secrets


def expected_statuses(endpoint: str, arguments: set[str], role: str, method: str) -> set[int] | None:
    """Return the statuses allowed for this request; None: any non-error status (own area)."""
    if endpoint in PUBLIC:
        return PUBLIC[endpoint](role, method)
    if endpoint.startswith("webhooks."):
        return {400, 401, 403}  # unsigned (or, in the sandbox demo, an empty inbound form)
    if role == "anonymous" and endpoint == "clients.email_stream":
        return {401}  # a log's event stream has no page to send to the login form
    if role == "anonymous":
        return {302, 204}  # to the login page; 204 + HX-Redirect for htmx
    if arguments & CLINIC_OBJECTS:
        return {403, 404}
    if endpoint.startswith("support.") and role != "support":
        return {404}
    if endpoint.startswith("owner.") and role != "owner":
        return {404}
    if endpoint.startswith(("clients.", "emails.")) and role == "support":
        return {404}
    return None


def signed_in(app, world, role: str) -> FlaskClient:
    client = app.test_client()
    if role != "anonymous":
        login(client, world.users[role].email)
    return client


def test_every_route_every_method_every_role_with_another_clinics_objects(app, world, other_clinic):
    values = fillers(world, other_clinic)
    b_ids = sorted({value for key in CLINIC_OBJECTS for value in values[key]})
    emails_before = db.session.execute(sa.select(sa.func.count(Email.id))).scalar()
    checked = 0
    for rule in sorted(app.url_map.iter_rules(), key=lambda rule: rule.rule):
        arguments = set(rule.arguments)
        # An unknown parameter name gets each of the other clinic's ids, and is treated as one.
        choices = [values.get(name, b_ids) for name in sorted(arguments)]
        if arguments - set(values):
            arguments |= CLINIC_OBJECTS
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            for combo, role, htmx in itertools.product(itertools.product(*choices), ROLES, (False, True)):
                url = rule.build(dict(zip(sorted(rule.arguments), combo, strict=True)), append_unknown=False)[
                    1
                ]
                headers = {"HX-Request": "true"} if htmx else {}
                response = signed_in(app, world, role).open(url, method=method, headers=headers, data={})
                where = f"{role} {method} {url} (htmx={htmx}) -> {response.status_code}"
                allowed = expected_statuses(rule.endpoint, arguments, role, method)
                if allowed is None:
                    assert response.status_code < 500, where
                else:
                    assert response.status_code in allowed, where
                if allowed == {302, 204}:
                    target = response.headers.get("HX-Redirect") or response.headers.get("Location", "")
                    assert target.startswith("/login"), where
                text = response.get_data(as_text=True) + str(response.headers)
                for secret in secrets_of_b(world, role, rule.endpoint):
                    assert secret not in text, f"{where} leaks {secret!r}"
                response.close()
                checked += 1
    assert checked > 100
    # Nothing of clinic B changed either.
    db.session.expire_all()
    assert all(db.session.get(User, world.users[name].id).active for name in ("clinician_b", "owner_b"))
    assert db.session.execute(sa.select(sa.func.count(Email.id))).scalar() == emails_before
    assert db.session.get(Email, other_clinic["email"].id).client.email == "bob.other+delivered@example.com"


@pytest.mark.parametrize("role", ["clinician", "owner"])
def test_clinic_a_gets_404_for_clinic_bs_client_log_send_and_resend(app, world, other_clinic, role):
    client = signed_in(app, world, role)
    b = world.client_b.id
    email_b = other_clinic["email"].id
    assert client.get(f"/clients/{b}").status_code == 404
    assert client.get(f"/clients/{b}/emails").status_code == 404
    # Even B's current change marker, which a poll answers from Redis, gets nothing but a 404.
    fresh = f"{other_clinic['marker']}-{int(time.time()) + 60}"
    poll = {"HX-Request": "true", "HX-Trigger": "email-log"}
    assert client.get(f"/clients/{b}/emails?v={fresh}", headers=poll).status_code == 404
    sent = client.post(f"/clients/{b}/emails", data={"kind": "free_text", "subject": "x", "body": "y"})
    assert sent.status_code == 404
    resend = client.post(
        f"/emails/{email_b}/resend", data={"confirm": "yes", "to_address": "evil@example.com"}
    )
    assert resend.status_code == 404
    assert client.post(f"/emails/{email_b}/resend").status_code == 404
    # The own clinic still works, so the 404s above are about the clinic, not a broken page.
    assert client.get(f"/clients/{world.client_a.id}").status_code == 200
    assert db.session.execute(sa.select(sa.func.count(Email.id)).where(Email.client_id == b)).scalar() == 1


def test_owners_manage_only_their_own_clinics_users(app, world):
    owner = signed_in(app, world, "owner")
    page = owner.get("/clinic/users").get_data(as_text=True)
    assert "Cleo A" in page and "Cleo B" not in page and "Owen B" not in page
    for user in ("clinician_b", "owner_b"):
        assert owner.post(f"/clinic/users/{world.users[user].id}/deactivate").status_code == 404
    response = owner.post(
        "/clinic/users",
        data={"name": "New Nurse", "email": "nurse@a.example", "role": "support", "password": "x" * 16},
    )
    assert response.status_code == 422  # owners add clinicians and owners only
    response = owner.post(
        "/clinic/users",
        data={"name": "New Nurse", "email": "nurse@a.example", "role": "clinician", "password": "x" * 16},
    )
    assert response.status_code == 303
    nurse = db.session.execute(sa.select(User).where(User.email == "nurse@a.example")).scalar_one()
    assert (nurse.clinic_id, nurse.role) == (world.clinic_a.id, "clinician")
    # A clinician manages nobody.
    clinician = signed_in(app, world, "clinician")
    assert clinician.get("/clinic/users").status_code == 404
    assert clinician.post(f"/clinic/users/{nurse.id}/deactivate").status_code == 404


def test_support_sees_the_queue_and_cases_but_no_email_log(app, world, other_clinic):
    support = signed_in(app, world, "support")
    queue = support.get("/support/removal-requests").get_data(as_text=True)
    assert world.client_b.email in queue
    case = support.get(f"/support/removal-requests/{other_clinic['case'].id}").get_data(as_text=True)
    assert "Clinic B (1)" in case  # what the case needs: which clinic holds the address
    assert SECRET_SUBJECT not in case and world.client_b.name not in case
    for path in ("/clients", f"/clients/{world.client_b.id}", f"/clients/{world.client_b.id}/emails"):
        assert support.get(path).status_code == 404
    assert support.get("/clinic/audit").status_code == 404
    clinician = signed_in(app, world, "clinician")
    assert clinician.get("/support/removal-requests").status_code == 404
    assert db.session.execute(sa.select(sa.func.count(RemovalRequest.id))).scalar() == 1
