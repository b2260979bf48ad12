"""One account cannot take the site down with email-log streams: a user holds at most
LOG_STREAMS_PER_USER streams across all sessions and processes, a web process at most
LOG_STREAMS_PER_PROCESS, a user at most SESSIONS_PER_USER sessions (a new sign-in ends the
oldest), and past any cap the stream is refused (429, Retry-After) so the browser polls. Shown in
process, and against a real gunicorn server with a gevent worker that keeps answering /healthz."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from flask import Flask

from tests.faults import Processes, child_env, free_port, wait_for
from tests.helpers import PASSWORD, login
from webapp import clock
from webapp.extensions import db
from webapp.freshness import quota as stream_quota
from webapp.freshness import stream as log_stream
from webapp.redis_keys import redis_key
from webapp.services import accounts

STREAM = "/clients/{}/emails/stream"
# Each request starts with an empty `g`, as in production (conftest.py).
pytestmark = pytest.mark.usefixtures("separate_requests")


@pytest.fixture
def capped(make_app) -> Iterator[Flask]:
    """The app with small caps: 3 streams a user, 4 a process, 2 sessions a user."""
    app = make_app(LOG_STREAMS_PER_USER=3, LOG_STREAMS_PER_PROCESS=4, SESSIONS_PER_USER=2)
    with app.app_context():
        yield app
    app.extensions["log_feed"].stop()


@pytest.fixture
def staff(capped) -> dict[str, int]:
    """Clinic A (from the world fixture's recipe) with three clinicians and one client."""
    from webapp.models import Client, Clinic

    clinic = Clinic(name="Clinic A")
    db.session.add(clinic)
    db.session.flush()
    for number in range(3):
        accounts.create_user(f"c{number}@a.example", f"Cleo {number}", "clinician", PASSWORD, clinic)
    client = Client(clinic_id=clinic.id, name="Jane Doe", email="jane.doe+delivered@example.com")
    db.session.add(client)
    db.session.commit()
    return {"client": client.id}


def open_stream(browser, client_id: int):  # noqa: ANN001, ANN201 - Flask test client and response
    return browser.get(STREAM.format(client_id), buffered=False)


def signed_in(app: Flask, email: str):  # noqa: ANN201 - a Flask test client
    browser = app.test_client()
    login(browser, email)
    return browser


def test_one_user_holds_a_bounded_number_of_streams_across_all_sessions(capped, staff):
    tab, laptop = signed_in(capped, "c0@a.example"), signed_in(capped, "c0@a.example")
    held = [open_stream(tab, staff["client"]) for _ in range(2)] + [open_stream(laptop, staff["client"])]
    assert [response.status_code for response in held] == [200, 200, 200]
    for browser in (tab, laptop):
        refused = open_stream(browser, staff["client"])
        # An error answer: the browser's EventSource gives up, and the log polls instead.
        assert refused.status_code == 429 and refused.headers["Retry-After"] == "60"
        refused.close()
    theirs = open_stream(signed_in(capped, "c1@a.example"), staff["client"])
    assert theirs.status_code == 200  # another user is not held back by this one
    held.pop().close()
    again = open_stream(tab, staff["client"])
    assert again.status_code == 200  # a closed stream is no longer counted
    for response in [*held, again, theirs]:
        response.close()
    assert capped.extensions["log_feed"].open_count() == 0
    assert capped.extensions["redis"].keys(redis_key("log-streams", "user", "*")) == []


def test_a_web_process_holds_a_bounded_number_of_streams(capped, staff):
    held = [open_stream(signed_in(capped, f"c{number}@a.example"), staff["client"]) for number in (0, 1)]
    held += [open_stream(signed_in(capped, "c2@a.example"), staff["client"]) for _ in range(2)]
    assert [response.status_code for response in held] == [200] * 4
    refused = open_stream(signed_in(capped, "c2@a.example"), staff["client"])
    assert refused.status_code == 429  # the user may hold a third, the process holds no fifth
    refused.close()
    assert capped.extensions["log_feed"].open_count() == 4
    for response in held:
        response.close()
    # Nothing left counted.
    assert capped.extensions["redis"].keys(redis_key("log-streams", "user", "*")) == []


def test_a_stream_nobody_closed_stops_counting_after_its_lifetime(capped, app_clock):
    redis = capped.extensions["redis"]
    lifetime = 600
    assert stream_quota.claim(redis, 7, "a", clock.timestamp(), lifetime, 2)
    assert stream_quota.claim(redis, 7, "b", clock.timestamp(), lifetime, 2)
    assert stream_quota.claim(redis, 7, "c", clock.timestamp(), lifetime, 2) is False
    app_clock.advance(lifetime + stream_quota.GRACE_SECONDS + 1)  # its process was killed, say
    assert stream_quota.claim(redis, 7, "c", clock.timestamp(), lifetime, 2)
    counted = redis_key("log-streams", "user", 7)
    assert 0 < redis.ttl(counted) <= lifetime + stream_quota.GRACE_SECONDS + 2


def test_a_sign_in_past_the_cap_ends_the_oldest_session_and_its_streams(capped, staff):
    first = signed_in(capped, "c0@a.example")
    stream = open_stream(first, staff["client"])
    chunks = iter(stream.response)
    assert next(chunks).startswith(b"retry: ")
    second, third = signed_in(capped, "c0@a.example"), signed_in(capped, "c0@a.example")
    assert first.get("/clients").status_code == 302  # ended: back to the sign-in form
    assert second.get("/clients").status_code == 200 and third.get("/clients").status_code == 200
    capped.extensions["log_feed"].end_ended_sessions()  # what the feed does every 25 s
    assert list(chunks) == [log_stream.SESSION_OVER.encode()]
    stream.close()


# --- The same against a real server ------------------------------------------------------------


@pytest.fixture
def processes(app, tmp_path):
    """Processes the test starts; stopped (before the database is wiped) and checked afterwards."""
    started = Processes(tmp_path)
    yield started
    assert started.stop() == [], "a process outlived its process group"


def sign_in(base: str, email: str) -> httpx.Client:
    """A browser of its own, signed in through the form (with its CSRF token)."""
    http = httpx.Client(base_url=base, timeout=5)
    form = http.get("/login").text
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', form).group(1)
    answer = http.post("/login", data={"csrf_token": token, "email": email, "password": PASSWORD})
    assert answer.status_code == 302, answer.text[:300]
    return http


def still_answers(base: str) -> None:
    """The site answers everyone else at once: its health check and the sign-in page."""
    assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200
    assert httpx.get(f"{base}/login", timeout=5).status_code == 200


def test_a_real_gevent_server_keeps_answering_while_streams_are_opened_past_every_cap(app, world, processes):
    """One gevent worker with 30 connections; caps of 4 streams a user, 10 a process, 3 sessions a
    user. A clinician signs in 6 times and every session asks for 8 streams, three colleagues 8
    each: 72 asks, more than twice the connections. 10 are held, the rest refused at once, and
    /healthz, the sign-in page and the logs' own fetches keep answering throughout."""
    for number in range(3):
        accounts.create_user(
            f"colleague{number}@a.example", "Colleague", "clinician", PASSWORD, world.clinic_a
        )
    db.session.commit()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = child_env(
        app,
        LOG_STREAMS_PER_USER="4",
        LOG_STREAMS_PER_PROCESS="10",
        SESSIONS_PER_USER="3",
        LOG_STREAM_HEARTBEAT_SECONDS="1",  # a stream whose browser left is noticed within a second
    )
    gunicorn = str(Path(sys.executable).parent / "gunicorn")
    command = [gunicorn, "--bind", f"127.0.0.1:{port}", "--worker-class", "gevent", "--workers", "1"]
    processes.start("gunicorn", [*command, "--worker-connections", "30", "wsgi:app"], env)
    with httpx.Client(timeout=2) as http:  # one TLS context for every probe, not one each
        wait_for(lambda: _answers(http, base), 60, what="gunicorn to answer")
    url = STREAM.format(world.client_a.id)
    held: list[httpx.Response] = []

    def ask(http: httpx.Client) -> int:
        response = http.send(http.build_request("GET", url), stream=True)
        if response.status_code == 200:
            held.append(response)
        else:
            response.close()
        return response.status_code

    browsers: list[httpx.Client] = []
    try:
        sessions = [sign_in(base, "clinician@a.example") for _ in range(6)]
        browsers += sessions
        # Three sessions a user: the three oldest were ended by the newer sign-ins.
        assert [http.get("/clients").status_code for http in sessions] == [302] * 3 + [200] * 3
        asked = [[ask(http) for _ in range(8)] for http in sessions]
        assert asked[:3] == [[401] * 8] * 3
        assert sorted(code for codes in asked[3:] for code in codes) == [200] * 4 + [429] * 20
        still_answers(base)
        colleagues = [sign_in(base, f"colleague{number}@a.example") for number in range(3)]
        browsers += colleagues
        answers = [code for http in colleagues for code in (ask(http) for _ in range(8))]
        assert answers.count(200) == 6 and answers.count(429) == 18  # the process is full at 10
        assert len(held) == 10
        still_answers(base)
        # A log's own fetch (what the browser does when its stream is refused) still answers.
        log = sessions[-1].get(f"/clients/{world.client_a.id}/emails", headers={"HX-Request": "true"})
        assert log.status_code == 200
        # Streams the browsers hang up are uncounted on the server: the user may open one again.
        for response in held:
            response.close()
        held.clear()
        redis = app.extensions["redis"]
        counted = redis_key("log-streams", "user", "*")
        wait_for(lambda: not redis.keys(counted), 20, what="the closed streams to be uncounted")
        assert ask(sessions[-1]) == 200
        still_answers(base)
    finally:
        for response in held:
            response.close()
        for http in browsers:
            http.close()


def _answers(http: httpx.Client, base: str) -> bool:
    try:
        return http.get(f"{base}/healthz").status_code == 200
    except httpx.HTTPError:
        return False
