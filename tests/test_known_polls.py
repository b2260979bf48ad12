"""An unchanged log poll answered from what the web process knows (webapp/freshness/known.py):
no Redis round trip while the process's change feed is current, and never a change missed:
every announced change and ended session is forgotten before any stream rings, a dropped or
silent subscription stops the process trusting what it knows, and a fetch its stream asked for
reads Redis itself. The feed pings Redis only while polls ask: none for the push's own fetches."""

from __future__ import annotations

import re
import secrets
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from flask import Flask
from redis import Redis
from redis.exceptions import RedisError

from tests.helpers import FakeClock, FreezableLink, login, wait_until_current
from webapp.freshness import stream
from webapp.freshness.counters import log_channel, log_key
from webapp.freshness.known import Known
from webapp.freshness.stream import ASKED_SECONDS, KNOWN_LAG_SECONDS, PING_SECONDS, ChangeFeed
from webapp.services.accounts import live_key, sessions_ended_channel

POLL = {"HX-Request": "true", "HX-Trigger": "email-log"}


@pytest.fixture
def app(make_app) -> Iterator[Flask]:  # noqa: ANN001
    """The app under a Redis prefix of its own: test runs side by side share Redis's pub/sub,
    and another run's announcements (harmless, but each a forgetting) would make what is known
    here depend on them."""
    from flask import g

    application = make_app(REDIS_KEY_PREFIX=f"known-{secrets.token_hex(4)}:")

    @application.teardown_request
    def forget_request_user(_error: BaseException | None) -> None:
        g.pop("_login_user", None)

    with application.app_context():
        yield application


@pytest.fixture
def url(client, world) -> str:  # noqa: ANN001
    """A signed-in clinician's log poll URL, as the log names it."""
    login(client, "clinician@a.example")
    html = client.get(f"/clients/{world.client_a.id}/emails", headers=POLL).get_data(as_text=True)
    match = re.search(r'<section id="email-log"[^>]*?hx-get="([^"]+)"', html, re.S)
    assert match, html[:2000]
    return match.group(1).replace("&amp;", "&")


def another_process_changes(app: Flask, world) -> None:  # noqa: ANN001
    """Bump client A's log and announce it, as a commit in another process does."""
    redis = app.extensions["redis"]
    redis.incr(log_key(world.clinic_a.id, world.client_a.id))
    redis.publish(log_channel(world.clinic_a.id, world.client_a.id), b"1")


def wait_for(condition, what: str) -> None:  # noqa: ANN001
    """Wait (bounded) for a background thread to bring `condition` about."""
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, f"waited in vain for {what}"
        threading.Event().wait(0.01)


def known_by_this_process(app: Flask, client, url: str) -> ChangeFeed:  # noqa: ANN001
    """Wait for the feed, then poll once: the answer's counter and live mark are now known."""
    feed = app.extensions["log_feed"]
    wait_until_current(feed)
    assert client.get(url, headers=POLL).status_code == 204
    assert len(feed.known) == 2
    return feed


@pytest.fixture
def linked_feed(app: Flask) -> Iterator[tuple[ChangeFeed, FreezableLink, FakeClock]]:
    """The app's change feed listening through a link that can be frozen or cut, on a fake clock."""
    parts = urlsplit(app.config["REDIS_URL"])
    link = FreezableLink(parts.port or 6379)
    clock = FakeClock(1000.0)
    feed = ChangeFeed(
        parts._replace(netloc=f"127.0.0.1:{link.port}").geturl(),
        log_channel("*", "*", app=app),
        sessions_channel=sessions_ended_channel(app),
        monotonic=clock,
    )
    app.extensions["log_feed"] = feed
    yield feed, link, clock
    feed.stop()
    link.close()


def count_pings(feed: ChangeFeed, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record each ping the feed sends on its subscription (not redis-py's own health checks)."""
    sent: list[str] = []
    make = feed._redis.pubsub  # noqa: SLF001

    def pubsub(**options: object) -> object:
        subscription = make(**options)
        ping = subscription.ping

        def counted(*args: object) -> object:
            sent.append("ping")
            return ping(*args)

        subscription.ping = counted
        return subscription

    monkeypatch.setattr(feed._redis, "pubsub", pubsub)  # noqa: SLF001
    return sent


def go_round(app: Flask, linked_feed, world, times: int = 3) -> None:  # noqa: ANN001
    """Move the clock on by PING_SECONDS and announce a change to another log, `times` times, each
    time waiting until the feed heard it: it went round its loop, where it pings when one is due,
    at least as often, and one was due at each turn (without a sleep)."""
    feed, _link, clock = linked_feed
    channel = log_channel(world.clinic_b.id, world.client_b.id)
    bell = feed.open(channel)
    assert bell is not None
    for _ in range(times):
        clock.advance(PING_SECONDS)
        app.extensions["redis"].publish(channel, b"1")
        assert bell.wait(10)
    feed.close(bell)


class CountedReads:
    """The app's Redis client, counting the fast path's reads (one MGET a poll it cannot vouch for)."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.reads = 0

    def mget(self, *keys: str) -> list:
        self.reads += 1
        return self.redis.mget(*keys)

    def __getattr__(self, name: str) -> object:
        return getattr(self.redis, name)


def idle_spell(app: Flask, client, world, url: str, linked_feed, monkeypatch) -> list[str]:  # noqa: ANN001
    """Known and current after a poll, then nobody asks for longer than ASKED_SECONDS; return the
    feed's pings so far, as they go on."""
    feed, _link, clock = linked_feed
    pings = count_pings(feed, monkeypatch)
    known_by_this_process(app, client, url)
    assert pings  # asked for: it pinged
    clock.advance(ASKED_SECONDS + 0.1)
    go_round(app, linked_feed, world)  # past a ping it may have sent as the spell began
    return pings


def test_a_feed_nobody_asks_sends_no_pings(app, client, world, url, linked_feed, monkeypatch):
    feed = linked_feed[0]
    pings = idle_spell(app, client, world, url, linked_feed, monkeypatch)
    before = len(pings)
    go_round(app, linked_feed, world, times=5)  # a ping due at every turn, had anyone asked
    assert len(pings) == before
    assert not feed.current(ask=False)  # its last answer is older than the lag bound


def test_polls_trust_what_is_kept_again_soon_after_an_idle_spell(
    app, client, world, url, linked_feed, monkeypatch
):
    feed = linked_feed[0]
    pings = idle_spell(app, client, world, url, linked_feed, monkeypatch)
    before = len(pings)
    redis = app.extensions["redis"] = CountedReads(app.extensions["redis"])
    assert client.get(url, headers=POLL).status_code == 204
    assert redis.reads == 1  # the first poll after the spell asked Redis: kept, but not vouched for
    wait_for(lambda: len(pings) > before, "the feed to ping again")  # the poll asked: it pings
    wait_for(lambda: feed.current(ask=False), "the answer to its ping")
    for _ in range(3):
        assert client.get(url, headers=POLL).status_code == 204
    assert redis.reads == 1  # what was kept before the spell, trusted again (heard all meanwhile)


def test_a_log_on_the_push_does_not_keep_the_feed_pinging(app, client, world, url, linked_feed, monkeypatch):
    pings = idle_spell(app, client, world, url, linked_feed, monkeypatch)
    before = len(pings)
    changed = {**POLL, "X-Log-Changed": "1"}
    assert client.get(url, headers=changed).status_code == 204  # its stream opened
    another_process_changes(app, world)
    assert client.get(url, headers=changed).status_code == 200  # its stream rang: rendered
    # Its timed poll (minutes apart, LOG_POLL_STREAM_SECONDS): the log's "unchanged" ran out.
    ran_out = re.sub(r"v=(\w+)-\d+", r"v=\1-1", url)
    assert client.get(ran_out, headers=POLL).status_code == 200
    go_round(app, linked_feed, world)
    assert len(pings) == before


def test_an_unchanged_poll_needs_no_redis_round_trip_while_the_feed_is_current(app, client, url):
    known_by_this_process(app, client, url)
    from tests.product import free_port

    app.extensions["redis"] = Redis(port=free_port(), socket_connect_timeout=1)  # Redis unreachable
    assert client.get(url, headers=POLL).status_code == 204


def test_a_change_another_process_announces_is_forgotten_before_its_streams_ring(app, client, world, url):
    feed = known_by_this_process(app, client, url)
    bell = feed.open(log_channel(world.clinic_a.id, world.client_a.id))
    another_process_changes(app, world)
    assert bell.wait(10)
    assert client.get(url, headers=POLL).status_code == 200
    feed.close(bell)


def test_a_change_committed_here_is_forgotten_at_once(app, client, world, url):
    from tests.helpers import add_email
    from webapp.extensions import db

    known_by_this_process(app, client, url)
    add_email(world.client_a)  # marks the log changed
    db.session.commit()
    assert client.get(url, headers=POLL).status_code == 200


def test_a_session_another_process_ended_is_no_longer_known_as_live(app, client, world, url):
    feed = known_by_this_process(app, client, url)
    redis = app.extensions["redis"]
    with client.session_transaction() as session:
        sid = session["sid"]
    # As another process signing it out: the mark goes, then the end is announced.
    redis.delete(live_key(sid, app))
    redis.publish(sessions_ended_channel(app), b"1")
    # A ring on another log after it: the feed heard the end first (Redis keeps their order).
    bell = feed.open(log_channel(world.clinic_b.id, world.client_b.id))
    redis.publish(log_channel(world.clinic_b.id, world.client_b.id), b"1")
    assert bell.wait(10)
    feed.close(bell)
    assert client.get(url, headers=POLL).status_code != 204  # asked again: the view decides


def test_signing_out_here_forgets_every_live_session_at_once(app, client, url):
    copy = app.test_client()  # another browser with a copy of the cookie
    copy.set_cookie("session", client.get_cookie("session").value)
    known_by_this_process(app, copy, url)
    client.post("/logout")
    answer = copy.get(url, headers=POLL)
    assert answer.headers.get("HX-Redirect") == "/login"  # the view: to sign in, not "unchanged"


def test_a_change_made_while_the_subscription_dropped_is_not_missed(app, client, world, url, linked_feed):
    feed, link, _clock = linked_feed
    known_by_this_process(app, client, url)
    link.cut()  # the subscription drops
    wait_for(lambda: not feed.current(), "the feed to notice")
    another_process_changes(app, world)  # announced while nobody here listens
    assert client.get(url, headers=POLL).status_code == 200  # meanwhile: from Redis
    assert len(feed.known) == 0
    wait_until_current(feed)  # listening again: nothing from before the drop is trusted
    assert client.get(url, headers=POLL).status_code == 200


def test_a_silent_subscription_is_trusted_no_longer_than_the_lag_bound(app, client, world, url, linked_feed):
    feed, link, clock = linked_feed
    known_by_this_process(app, client, url)
    link.freeze()  # the connection stays open but passes nothing: pings and announcements are held
    another_process_changes(app, world)
    clock.advance(KNOWN_LAG_SECONDS + 0.1)  # no answer to a ping for longer than the bound
    assert not feed.current()
    assert client.get(url, headers=POLL).status_code == 200  # asked Redis, which has the change


def test_a_fetch_its_stream_asked_for_reads_redis_itself(app, client, world, url):
    known_by_this_process(app, client, url)
    # A change this process has not heard of yet (its announcement still on the way).
    app.extensions["redis"].incr(log_key(world.clinic_a.id, world.client_a.id))
    assert client.get(url, headers={**POLL, "X-Log-Changed": "1"}).status_code == 200


def test_a_read_overtaken_by_an_announcement_is_not_kept():
    known = Known()
    known.keep(known.generation, "other", b"1", "session", True)
    generation = known.generation
    known.forget_log("log")  # heard while the read was on its way
    known.keep(generation, "log", b"5", "session", True)
    assert known.answer("log", "session") is None
    known.keep(generation, "other", b"2", "session", True)  # another log's change: kept
    assert known.answer("other", "session") == b"2"
    known.keep(known.generation, "log", b"6", "session", True)
    assert known.answer("log", "session") == b"6"
    generation = known.generation
    known.forget_sessions()
    assert known.answer("log", "session") is None
    known.keep(generation, "log", b"6", "session", True)  # read before the session ended
    assert known.answer("log", "session") is None


def test_a_log_forgotten_long_ago_is_still_not_taken_from_an_older_read():
    known = Known(size=2)
    generation = known.generation
    for channel in ("log", "a", "b"):  # the record of "log" is dropped past the size
        known.forget_log(channel)
    known.keep(generation, "log", b"5", "session", True)
    assert known.answer("log", "session") is None


def test_what_is_kept_is_bounded():
    known = Known(size=3)
    for number in range(5):
        known.keep(known.generation, f"log-{number}", b"1", f"session-{number}", True)
    assert known.answer("log-0", "session-0") is None
    assert known.answer("log-4", "session-4") == b"1"
    assert len(known) == 6


def test_a_kept_cookie_still_runs_out_with_its_lifetime(app, client, url):
    assert client.get(url, headers=POLL).status_code == 204
    cookie = client.get_cookie("session").value
    middleware = app.wsgi_app
    now = time.time()
    assert middleware._session(cookie, now) is not None  # noqa: SLF001
    assert middleware._session(cookie, now + middleware.max_age + 10) is None  # noqa: SLF001
    assert middleware._session(cookie[:-2] + "xx", now) is None  # noqa: SLF001 - a forged signature


def test_a_render_takes_its_counter_and_the_live_mark_from_what_is_known(app, client, world, url):
    known_by_this_process(app, client, url)
    counter = app.extensions["redis"].get(log_key(world.clinic_a.id, world.client_a.id)).decode()
    from tests.product import free_port

    app.extensions["redis"] = Redis(port=free_port(), socket_connect_timeout=1)  # no round trip possible
    changed = re.sub(r"v=\w+-", "v=0-", url)
    html = client.get(changed, headers=POLL).get_data(as_text=True)
    assert f"v={counter}-" in html  # not "none", which a failed Redis read gives


def test_a_redis_gone_silent_does_not_hang_the_feeds_session_check(app, monkeypatch):
    """The feed's check of its streams' sessions gives up on a silent Redis (and the feed starts
    again) instead of holding its thread, and with it every open log, for good."""
    monkeypatch.setattr(stream, "COMMAND_TIMEOUT_SECONDS", 0.3)
    link = FreezableLink(urlsplit(app.config["REDIS_URL"]).port or 6379)
    feed = ChangeFeed(
        urlsplit(app.config["REDIS_URL"])._replace(netloc=f"127.0.0.1:{link.port}").geturl(),
        log_channel("*", "*", app=app),
        sessions_channel=sessions_ended_channel(app),
    )
    outcome: list[BaseException | None] = []

    def check() -> None:
        try:
            feed.end_ended_sessions()
            outcome.append(None)
        except RedisError as error:
            outcome.append(error)

    try:
        assert feed.open(log_channel(1, 1, app=app), live_key("a-session")) is not None
        link.freeze()
        checker = threading.Thread(target=check, daemon=True)
        checker.start()
        checker.join(30)
        assert not checker.is_alive(), "the feed's session check hung on a silent Redis"
        assert isinstance(outcome[0], RedisError)
    finally:
        feed.stop()
        link.close()
