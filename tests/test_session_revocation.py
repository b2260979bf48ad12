"""Sessions die when they should, on the server: sign-out, "sign out everywhere" and deactivation
end a session at once, and a copied cookie stops working with it (the log's Redis-only "nothing
changed" answer included). A failed sign-in takes as long for an existing account as for none."""

from __future__ import annotations

import statistics
import time

import pytest
import sqlalchemy as sa
from flask.testing import FlaskClient

from tests.helpers import PASSWORD, htmx_get, login, poll_url
from webapp.extensions import db
from webapp.models import AuditEntry, UserSession

# Every page rendered here is checked for CSP breakers; each request starts with an empty `g` (conftest.py).
pytestmark = pytest.mark.usefixtures("separate_requests", "html_guard")


def copy_of(app, client: FlaskClient) -> FlaskClient:
    """Another browser holding a copy of the client's session cookie."""
    thief = app.test_client()
    thief.set_cookie("session", client.get_cookie("session").value)
    return thief


def log_poll(client: FlaskClient, world) -> str:
    """Open the client file's log and return the URL its poll asks next."""
    first = htmx_get(client, f"/clients/{world.client_a.id}/emails")
    assert first.status_code == 200
    return poll_url(first.get_data(as_text=True))


def assert_signed_out(client: FlaskClient, poll: str) -> None:
    """Every request of the session, the log's Redis-only answer too, goes to the login page."""
    assert client.get("/clients").headers["Location"].startswith("/login")
    answer = htmx_get(client, poll)
    assert answer.status_code == 204 and answer.headers.get("HX-Redirect") == "/login"


def test_a_copied_cookie_stops_working_at_sign_out(app, world):
    client = app.test_client()
    login(client, "clinician@a.example")
    poll = log_poll(client, world)
    copy = copy_of(app, client)
    assert copy.get("/clients").status_code == 200
    assert htmx_get(copy, poll).status_code == 204 and "HX-Redirect" not in htmx_get(copy, poll).headers

    assert client.post("/logout").status_code == 302
    assert_signed_out(copy, poll)
    assert copy.post("/logout").status_code == 302  # nothing left to end, and no error


def test_sign_out_everywhere_ends_every_session_of_the_user_only(app, world):
    laptop, phone, colleague = app.test_client(), app.test_client(), app.test_client()
    login(laptop, "clinician@a.example")
    login(phone, "clinician@a.example")
    login(colleague, "owner@a.example")
    poll = log_poll(phone, world)
    assert "Sign out everywhere" in laptop.get("/clients").get_data(as_text=True)

    response = laptop.post("/logout/everywhere")
    assert response.status_code == 302 and response.headers["Location"] == "/login"
    assert "signed out on every device" in laptop.get("/login").get_data(as_text=True)
    assert_signed_out(phone, poll)
    assert laptop.get("/clients").status_code == 302
    assert colleague.get("/clients").status_code == 200
    everywhere = sa.select(AuditEntry).where(AuditEntry.action == "logout.everywhere")
    [entry] = db.session.execute(everywhere).scalars()
    assert entry.actor_id == world.users["clinician"].id and entry.clinic_id == world.clinic_a.id


def test_deactivation_ends_the_session_at_once_even_for_the_log_poll(app, world):
    clinician, owner = app.test_client(), app.test_client()
    login(clinician, "clinician@a.example")
    login(owner, "owner@a.example")
    poll = log_poll(clinician, world)
    assert htmx_get(clinician, poll).status_code == 204
    assert owner.post(f"/clinic/users/{world.users['clinician'].id}/deactivate").status_code == 303
    assert_signed_out(clinician, poll)
    # Reactivated, the old session stays over: the person signs in again.
    assert owner.post(f"/clinic/users/{world.users['clinician'].id}/activate").status_code == 303
    assert clinician.get("/clients").status_code == 302
    login(clinician, "clinician@a.example")
    assert clinician.get("/clients").status_code == 200


def test_sessions_are_kept_on_the_server_by_a_hash_of_their_id(app, world):
    client = app.test_client()
    login(client, "clinician@a.example")
    with client.session_transaction() as session:
        sid = session["sid"]
    [row] = db.session.execute(sa.select(UserSession)).scalars()
    assert row.user_id == world.users["clinician"].id and row.ended_at is None
    assert sid not in row.sid_hash and len(row.sid_hash) == 64


def test_the_log_poll_survives_redis_losing_the_session_marks(app, world):
    client = app.test_client()
    login(client, "clinician@a.example")
    poll = log_poll(client, world)
    for key in app.extensions["redis"].keys("session-live:*"):
        app.extensions["redis"].delete(key)
    answer = htmx_get(client, poll)
    assert answer.status_code == 200  # rendered from the database, which knows the session
    assert htmx_get(client, poll_url(answer.get_data(as_text=True))).status_code == 204  # marked again


def test_a_failed_sign_in_takes_as_long_for_an_existing_account_as_for_none(
    app, world, make_app, monkeypatch
):
    """Both paths do the same work (one password hash check) and answer no sooner than a floor.

    The timing itself is compared loosely (half the floor): on a busy machine scheduling noise is
    larger than any difference the code could still make once the work is equal.
    """
    from webapp.services import accounts

    floor = 0.05  # above the tests' cheap password hash and the rest of the work
    client = make_app(LOGIN_FAILURE_SECONDS=floor).test_client()
    hash_checks: list[str] = []
    real_check = accounts.check_password_hash

    def counting_check(stored: str, password: str) -> bool:
        hash_checks.append(stored.split("$")[0])
        return real_check(stored, password)

    monkeypatch.setattr(accounts, "check_password_hash", counting_check)

    def seconds(email: str) -> float:
        started = time.perf_counter()
        response = client.post("/login", data={"email": email, "password": "not " + PASSWORD})
        elapsed = time.perf_counter() - started
        assert response.status_code == 401
        return elapsed

    for email in ("owner@a.example", "nobody@a.example"):  # warm up both paths
        seconds(email)
    assert len(hash_checks) == 2 and hash_checks[0] == hash_checks[1]  # same work, same method
    existing, unknown = [], []
    for _ in range(15):  # interleaved, so both see the same machine
        existing.append(seconds("owner@a.example"))
        unknown.append(seconds("nobody@a.example"))
    assert min(existing + unknown) >= floor
    difference = statistics.median(existing) - statistics.median(unknown)
    assert abs(difference) < floor / 2, f"{difference * 1000:.2f} ms"


def test_the_dummy_password_hash_is_made_at_the_first_unknown_sign_in_and_only_once(app, world, monkeypatch):
    import subprocess
    import sys
    from pathlib import Path

    from webapp.services import accounts

    # Importing the app computes no hash (an scrypt hash costs start-up time in every process).
    probe = "import webapp, webapp.services.accounts as a; print(a._dummy_hash.cache_info().currsize)"
    root = Path(__file__).resolve().parents[1]
    at_import = subprocess.run(
        [sys.executable, "-c", probe], cwd=root, capture_output=True, text=True, check=True
    )
    assert at_import.stdout == "0\n"

    made: list[str] = []
    real = accounts.generate_password_hash

    def counting(password: str, method: str) -> str:
        made.append(method)
        return real(password, method=method)

    accounts._dummy_hash.cache_clear()
    monkeypatch.setattr(accounts, "generate_password_hash", counting)
    client = app.test_client()
    client.post("/login", data={"email": "owner@a.example", "password": "wrong"})
    assert made == []  # an existing account is checked against its own hash
    for stranger in ("nobody@a.example", "no-one@b.example"):
        assert client.post("/login", data={"email": stranger, "password": "wrong"}).status_code == 401
    assert made == [app.config["PASSWORD_HASH_METHOD"]]
