"""The email log's event stream (push): who may open it, that a committed change rings it through
Redis pub/sub on a real server, and its heartbeat, lifetime and end with the session."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import httpx
import pytest
from flask import Flask
from werkzeug.serving import make_server

from tests.helpers import DELIVERED, PASSWORD, add_email, login
from webapp.freshness import stream as log_stream
from webapp.freshness.counters import log_channel

STREAM = "/clients/{}/emails/stream"


@pytest.fixture(autouse=True)
def stop_feeds(app: Flask) -> Iterator[None]:
    """Each app's listener ends with its test."""
    yield
    app.extensions["log_feed"].stop()


def first_chunk(response) -> bytes:  # noqa: ANN001 - a Flask test response, read lazily
    """Read what the stream sends at once, then hang up."""
    try:
        return next(iter(response.response))
    finally:
        response.close()


def test_only_the_clinics_staff_with_a_live_session_may_open_a_logs_stream(app, client, world):
    url = STREAM.format(world.client_a.id)
    assert app.test_client().get(url).status_code == 401  # anonymous: no redirect EventSource would follow
    login(client, "support@platform.example")
    assert client.get(url).status_code == 404
    client.post("/logout")
    login(client, "clinician@a.example")
    assert client.get(STREAM.format(world.client_b.id)).status_code == 404  # another clinic's client
    for role in ("clinician@a.example", "owner@a.example"):
        other = app.test_client()
        login(other, role)
        response = other.get(url, buffered=False)
        assert response.status_code == 200
        assert response.mimetype == "text/event-stream"
        assert response.headers["Cache-Control"] == "no-store"
        # The stream does not count as the user acting: it keeps no idle session alive.
        assert "Set-Cookie" not in response.headers
        assert first_chunk(response).startswith(b"retry: ")
    assert app.extensions["log_feed"].open_count() == 0  # each hung-up stream was forgotten


@pytest.mark.parametrize(
    "path",
    [
        "/clients/abc/emails/stream",
        "/clients/-1/emails/stream",
        "/clients/99999999999999999999/emails/stream",
        "/clients/1/emails/stream/x",
        "/clients/{a}/emails/stream?v=1",
        "/clients/{a}/emails/stream?" + "x" * 5000,
        "/clients/{a}/emails/stream?open=1,2,3",
    ],
)
def test_junk_in_the_stream_url_is_a_4xx(app, client, world, path):
    login(client, "clinician@a.example")
    response = client.get(path.format(a=world.client_a.id), buffered=False)
    assert 400 <= response.status_code < 500
    response.close()


def test_with_the_push_off_the_log_names_no_stream_and_the_route_is_gone(app, client, world):
    app.config["LOG_STREAM_SECONDS"] = 0
    login(client, "clinician@a.example")
    html = client.get(f"/clients/{world.client_a.id}").get_data(as_text=True)
    assert "data-stream-url" not in html and "data-poll-seconds" in html
    assert client.get(STREAM.format(world.client_a.id)).status_code == 404


def test_the_log_names_its_stream_and_how_rarely_to_poll_while_it_is_open(client, world):
    login(client, "clinician@a.example")
    html = client.get(f"/clients/{world.client_a.id}").get_data(as_text=True)
    assert f'data-stream-url="{STREAM.format(world.client_a.id)}"' in html
    assert 'data-stream-poll-seconds="300"' in html


@pytest.fixture
def served(app: Flask) -> Iterator[str]:
    """The app on a loopback port, served by threads (as the browser tests do)."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    app.extensions["log_feed"].stop()  # ends open streams, so their threads finish
    server.shutdown()
    thread.join(timeout=5)
    server.server_close()


def test_a_committed_change_rings_the_open_stream_through_redis(app, world, served):
    from webapp.extensions import db

    email = add_email(world.client_a, events=DELIVERED[:1])
    with httpx.Client(base_url=served, timeout=10) as http:
        signed_in = http.post("/login", data={"email": "clinician@a.example", "password": PASSWORD})
        assert signed_in.status_code == 302
        with http.stream("GET", STREAM.format(world.client_a.id)) as response:
            assert response.status_code == 200
            lines = response.iter_lines()
            assert next(lines).startswith("retry: ")
            from webapp.freshness.counters import mark_changed

            email.status = "delivered"
            mark_changed(email)
            db.session.commit()
            seen = []
            for line in lines:  # the read times out (fails) if nothing comes
                seen.append(line)
                if line == "event: changed":
                    break
            assert seen[-1] == "event: changed"
            assert next(lines) == "data: 1"


def test_a_change_rings_only_the_streams_of_that_log(app, world):
    feed = app.extensions["log_feed"]
    redis = app.extensions["redis"]
    mine = feed.open(log_channel(world.clinic_a.id, world.client_a.id))
    theirs = feed.open(log_channel(world.clinic_b.id, world.client_b.id))
    assert mine is not None and theirs is not None
    redis.publish(log_channel(world.clinic_a.id, world.client_a.id), b"1")
    assert mine.wait(10)
    redis.publish(log_channel(world.clinic_b.id, world.client_b.id), b"1")
    assert theirs.wait(10)
    # Redis delivers in order: the second message was handled before `theirs` rang.
    assert not mine.wait(0)
    feed.close(mine)
    feed.close(theirs)
    assert feed.open_count() == 0


def test_a_change_is_committed_even_when_it_cannot_be_announced(app, world, caplog):
    from redis import Redis

    from tests.product import free_port
    from webapp.extensions import db
    from webapp.freshness.counters import mark_changed
    from webapp.models import Email

    email = add_email(world.client_a, events=DELIVERED[:1])
    # Redis goes away after start-up: the write stands, and the log's poll renders from the database.
    app.extensions["redis"] = Redis(port=free_port(), socket_connect_timeout=1)
    email.subject = "Changed"
    mark_changed(email)
    db.session.commit()
    db.session.expire_all()
    assert db.session.get(Email, email.id).subject == "Changed"
    assert "could not bump log change counters" in caplog.text


class SteppingDoorbell:
    """A subscription that never rings: each wait moves the fake clock by its whole timeout."""

    def __init__(self, clock, rings_at: tuple[float, ...] = ()) -> None:  # noqa: ANN001
        self.clock = clock
        self.ended = False
        self.session_over = False
        self.rings_at = list(rings_at)
        self.started = clock()

    def wait(self, seconds: float) -> bool:
        if self.rings_at and self.clock() + seconds >= self.started + self.rings_at[0]:
            self.clock.now = self.started + self.rings_at.pop(0)
            return True
        self.clock.advance(seconds)
        return False


def test_a_stream_beats_every_25_s_and_ends_after_its_lifetime(clock):
    bell = SteppingDoorbell(clock, rings_at=(30.0, 30.5))
    text = list(log_stream.events(bell, 300, lambda: True, now=clock))
    assert text[0].startswith("retry: ")
    assert text.count(": heartbeat\n\n") == 11  # at 25, 50 ... 275 s
    assert text.count("event: changed\ndata: 1\n\n") == 2
    assert clock() - bell.started == 300


def test_a_stream_ends_with_its_session(clock):
    bell = SteppingDoorbell(clock)
    live_until = clock() + 60
    text = list(log_stream.events(bell, 300, lambda: clock() < live_until, now=clock))
    assert text.count(": heartbeat\n\n") == 2  # at 25 and 50 s; at 75 s the session had ended
    assert text[-1] == "event: end\ndata: session\n\n"  # so the browser does not reconnect
    assert clock() - bell.started == 75


def test_a_stream_ends_when_its_feed_loses_redis(clock):
    bell = SteppingDoorbell(clock)
    bell.ended = True
    assert list(log_stream.events(bell, 300, lambda: True, now=clock)) == [
        f"retry: {log_stream.RETRY_MILLISECONDS}\n: open\n\n"
    ]


def test_an_ended_session_cannot_open_a_stream(app, client, world):
    login(client, "clinician@a.example")
    client.post("/logout")
    assert client.get(STREAM.format(world.client_a.id)).status_code == 401


def test_a_server_asked_to_stop_ends_its_streams_and_still_stops(app, world):
    import os
    import signal

    original = signal.getsignal(signal.SIGTERM)
    asked: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, frame: asked.append(signum))  # the server's own handler
    try:
        feed = app.extensions["log_feed"]
        subscription = feed.open(log_channel(world.clinic_a.id, world.client_a.id))
        assert subscription is not None and not subscription.ended
        os.kill(os.getpid(), signal.SIGTERM)
        assert subscription.wait(10) and subscription.ended  # the stream ends at once
        assert asked == [signal.SIGTERM]  # and the server goes on stopping as it would have
        assert feed.open(log_channel(world.clinic_a.id, world.client_a.id)) is None  # no new streams
    finally:
        signal.signal(signal.SIGTERM, original)


def test_signing_out_ends_the_sessions_open_streams(app, world):
    browser = app.test_client()
    login(browser, "clinician@a.example")
    other_tab = app.test_client()
    login(other_tab, "clinician@a.example")  # another session of the same user: its stream stays
    mine = browser.get(STREAM.format(world.client_a.id), buffered=False)
    theirs = other_tab.get(STREAM.format(world.client_a.id), buffered=False)
    chunks, other_chunks = iter(mine.response), iter(theirs.response)
    assert next(chunks).startswith(b"retry: ") and next(other_chunks).startswith(b"retry: ")
    browser.post("/logout")
    feed = app.extensions["log_feed"]
    feed.end_ended_sessions()  # what the feed does every 25 s, for all its streams at once
    assert list(chunks) == [b"event: end\ndata: session\n\n"]  # at once, without a heartbeat
    assert feed.open_count() == 1
    theirs.close()
    assert feed.open_count() == 0


def test_a_stream_whose_body_never_runs_is_forgotten_and_head_opens_none(app, client, world):
    """A HEAD, or a browser gone before the first byte, leaves no registration behind."""
    login(client, "clinician@a.example")
    url = STREAM.format(world.client_a.id)
    feed = app.extensions["log_feed"]
    for _ in range(3):
        assert client.head(url).status_code == 405
    assert feed.open_count() == 0
    response = client.get(url, buffered=False)
    assert response.status_code == 200 and feed.open_count() == 1
    response.close()  # hung up before reading anything
    assert feed.open_count() == 0


def test_a_log_fetch_that_finds_every_connection_busy_answers_503_to_retry(app, client, world, monkeypatch):
    """A burst of rung logs may take every pooled connection: the one left waiting hears "retry"."""
    import sqlalchemy.exc

    from webapp.services import clients

    login(client, "clinician@a.example")

    def pool_exhausted(*args, **kwargs):  # noqa: ANN002, ANN003 - stands in for any query
        raise sqlalchemy.exc.TimeoutError("QueuePool limit of size 5 overflow 10 reached")

    monkeypatch.setattr(clients, "get_client_and_spam_entry", pool_exhausted)
    response = client.get(f"/clients/{world.client_a.id}/emails", headers={"HX-Request": "true"})
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
