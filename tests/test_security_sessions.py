"""Sign-in and sessions: hashed passwords, throttling on the real Redis, cookie flags, a new
session at login, idle and absolute timeouts, and sessions that end with the account."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from http.cookies import SimpleCookie

import pytest
from flask.testing import FlaskClient

from config import DEFAULTS
from tests.helpers import PASSWORD, attempt, login
from webapp.extensions import db
from webapp.security import ABSOLUTE_TIMEOUT_SECONDS, IDLE_TIMEOUT_SECONDS

# Every page rendered here is checked for CSP breakers; each request starts with an empty `g` (conftest.py).
pytestmark = pytest.mark.usefixtures("separate_requests", "html_guard")


def session_cookie(response) -> SimpleCookie:
    [header] = [value for value in response.headers.getlist("Set-Cookie") if value.startswith("session=")]
    cookie = SimpleCookie()
    cookie.load(header)
    return cookie


def test_passwords_are_stored_as_salted_hashes(world):
    owner = world.users["owner"]
    assert PASSWORD not in owner.password_hash
    assert owner.password_hash.startswith("pbkdf2:sha256:")  # the cheap test setting
    assert DEFAULTS["PASSWORD_HASH_METHOD"] == "scrypt"  # production
    other = world.users["clinician"]
    assert other.password_hash != owner.password_hash  # same password, different salt


def test_an_address_is_throttled_on_failed_attempts_only(app, world, make_app):
    limited = make_app(RATELIMIT_ENABLED=True, LOGIN_ADDRESS_RATE_LIMIT="5 per 15 minutes")
    client = limited.test_client()
    for _ in range(3):  # a clinic's staff signing in from one address do not use it up
        assert attempt(client, "clinician@a.example", PASSWORD, "192.0.2.9").status_code == 302
    for i in range(5):  # password spraying across accounts
        assert attempt(client, f"nobody{i}@a.example", "guess", "192.0.2.9").status_code == 401
    assert attempt(client, "owner@a.example", PASSWORD, "192.0.2.9").status_code == 429
    # X-Forwarded-For is not trusted unless TRUSTED_PROXIES says so: rotating it does not help.
    assert attempt(client, "owner@a.example", PASSWORD, "192.0.2.9", "203.0.113.5").status_code == 429
    assert attempt(client, "owner@a.example", PASSWORD, "192.0.2.10").status_code == 302


def test_behind_a_trusted_proxy_the_forwarded_client_address_is_throttled(app, world, make_app):
    limited = make_app(RATELIMIT_ENABLED=True, LOGIN_ADDRESS_RATE_LIMIT="2 per 15 minutes", TRUSTED_PROXIES=1)
    client = limited.test_client()
    proxy = "10.0.0.1"
    for i in range(2):
        assert attempt(client, f"nobody{i}@a.example", "guess", proxy, "203.0.113.5").status_code == 401
    assert attempt(client, "owner@a.example", PASSWORD, proxy, "203.0.113.5").status_code == 429
    # Another client behind the same proxy is someone else.
    assert attempt(client, "owner@a.example", PASSWORD, proxy, "203.0.113.6").status_code == 302


@pytest.mark.parametrize("env", ["production", "development"])
def test_the_session_cookie_is_httponly_samesite_lax_and_secure_in_production(app, world, make_app, env):
    from tests.helpers import production

    settings = production() if env == "production" else {}
    settings.pop("DATABASE_URL", None)  # the test database
    built = make_app(**settings)
    response = built.test_client().post(
        "/login", data={"email": "owner@a.example", "password": PASSWORD}, base_url="https://clinic.example"
    )
    assert response.status_code == 302
    morsel = session_cookie(response)["session"]
    assert morsel["httponly"] is True
    assert morsel["samesite"] == "Lax"
    assert bool(morsel["secure"]) is (env == "production")
    expires = datetime.strptime(morsel["expires"], "%a, %d %b %Y %H:%M:%S GMT").replace(tzinfo=UTC)
    assert expires <= datetime.now(UTC) + timedelta(seconds=ABSOLUTE_TIMEOUT_SECONDS + 60)


def test_login_starts_a_new_session(app, world):
    client = app.test_client()
    client.get("/login")
    with client.session_transaction() as session:
        session["planted"] = "by an attacker"
        session["sid"] = "fixed-by-attacker"
    before = client.get_cookie("session").value
    login(client, "owner@a.example")
    with client.session_transaction() as session:
        assert "planted" not in session
        assert session["sid"] != "fixed-by-attacker"
        assert session["_user_id"] == str(world.users["owner"].id)
    # The pre-login cookie is still nobody's session.
    stale = app.test_client()
    stale.set_cookie("session", before)
    assert stale.get("/clients").status_code == 302


def test_login_returns_to_the_page_asked_for_but_never_to_another_site(app, world):
    client = app.test_client()
    wanted = f"/clients/{world.client_a.id}"
    assert client.get(wanted).headers["Location"].startswith("/login")
    response = client.post("/login", data={"email": "clinician@a.example", "password": PASSWORD})
    assert response.headers["Location"] == wanted
    for unsafe in ("//evil.example/", "/\\evil.example", "https://evil.example/"):
        other = app.test_client()
        with other.session_transaction() as session:
            session["next_url"] = unsafe
        response = other.post("/login", data={"email": "clinician@a.example", "password": PASSWORD})
        assert response.headers["Location"] == "/"


def signed_in(app, email: str = "clinician@a.example") -> FlaskClient:
    client = app.test_client()
    login(client, email)
    return client


def set_session(client: FlaskClient, **values: int) -> None:
    with client.session_transaction() as session:
        session.update(values)


def test_the_idle_timeout_is_30_minutes(app, world):
    assert IDLE_TIMEOUT_SECONDS == 30 * 60
    client = signed_in(app)
    now = int(time.time())
    set_session(client, seen_at=now - 29 * 60)
    assert client.get("/clients").status_code == 200
    with client.session_transaction() as session:
        assert session["seen_at"] >= now  # activity keeps the session alive
    set_session(client, seen_at=now - 31 * 60)
    response = client.get("/clients")
    assert response.status_code == 302 and response.headers["Location"].startswith("/login")
    with client.session_transaction() as session:
        assert "_user_id" not in session
    # An htmx request is sent to the login page as a whole page, not swapped into the log.
    client = signed_in(app)
    set_session(client, seen_at=now - 31 * 60)
    response = client.get(f"/clients/{world.client_a.id}/emails", headers={"HX-Request": "true"})
    assert response.status_code == 204 and response.headers["HX-Redirect"] == "/login"


@pytest.mark.parametrize("hours", [-24, 24])
def test_a_session_runs_on_real_time_whatever_day_the_apps_clock_says(app, world, app_clock, hours):
    # A test sets the app's clock to a day of its own (before or after the real one): the session
    # it signs in with is stamped, kept alive and timed out on real time all the same.
    app_clock.now = time.time() + hours * 3600
    client = signed_in(app)
    with client.session_transaction() as session:
        assert abs(session["login_at"] - time.time()) < 60 and session["seen_at"] == session["login_at"]
    app_clock.advance(2 * 3600)  # time in the product moves on; the browser's session is still young
    assert client.get("/clients").status_code == 200
    set_session(client, seen_at=int(time.time()) - 31 * 60)
    assert client.get("/clients").status_code == 302


def test_the_log_refreshing_itself_does_not_keep_a_session_alive(app, world):
    client = signed_in(app)
    idle_since = int(time.time()) - 10 * 60
    set_session(client, seen_at=idle_since)
    poll = {"HX-Request": "true", "HX-Trigger": "email-log"}
    assert client.get(f"/clients/{world.client_a.id}/emails", headers=poll).status_code == 200
    with client.session_transaction() as session:
        assert session["seen_at"] == idle_since


def test_the_absolute_timeout_is_8_hours(app, world):
    assert ABSOLUTE_TIMEOUT_SECONDS == 8 * 60 * 60
    client = signed_in(app)
    now = int(time.time())
    set_session(client, login_at=now - 8 * 3600 + 60, seen_at=now)
    assert client.get("/clients").status_code == 200
    set_session(client, login_at=now - 8 * 3600 - 60, seen_at=now)
    assert client.get("/clients").status_code == 302


def test_a_deactivated_or_moved_user_loses_the_session_at_once(app, world):
    clinician = signed_in(app)
    owner = signed_in(app, "owner@a.example")
    assert owner.post(f"/clinic/users/{world.users['clinician'].id}/deactivate").status_code == 303
    assert clinician.get("/clients").status_code == 302
    assert attempt(app.test_client(), "clinician@a.example", PASSWORD, "192.0.2.1").status_code == 401
    # A change of role or clinic ends the session too: it was granted for the old one.
    promoted = signed_in(app, "clinician@b.example")
    world.users["clinician_b"].role = "owner"
    db.session.commit()
    assert promoted.get("/clients").status_code == 302


def test_logout_ends_the_session(app, world):
    client = signed_in(app)
    assert client.post("/logout").status_code == 302
    assert client.get("/clients").status_code == 302
