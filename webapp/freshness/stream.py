"""Push for open email logs: each web process listens once to Redis for log changes and tells the
open logs' event streams (text/event-stream), so a browser fetches its log as soon as it changed
instead of on a timer.

One pattern subscription per process, whatever the number of open logs: a stream costs a
dictionary entry and a wait, not a Redis connection. The same subscription keeps what the process
knows of the logs' counters current (webapp/freshness/known.py), so that an unchanged poll needs
no Redis round trip while it listens; while polls ask for what it knows, it pings Redis every
PING_SECONDS to know how far behind it could be. A stream is only a doorbell: the browser
fetches the log through the usual path (webapp/freshness/fastpoll.py, then the view), so what it shows
and who may see it are decided there. Every failure here falls back to that polling: a lost Redis
ends the streams, and the browser polls at the usual interval until its stream is back.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from redis import Redis
from redis.exceptions import RedisError

from webapp import clock
from webapp.freshness.known import Known

log = logging.getLogger(__name__)

# A comment line this often keeps proxies from closing an idle stream and finds gone browsers
# (LOG_STREAM_HEARTBEAT_SECONDS); the feed checks its streams' sessions as often.
HEARTBEAT_SECONDS = 25.0
# How long open() waits for the process's subscription before refusing the stream (503).
CONNECT_WAIT_SECONDS = 2.0
# The browser reconnects this soon after a stream ends (its bounded lifetime, a restart).
RETRY_MILLISECONDS = 2000
# Tells the browser not to reconnect but to fetch the log, whose route sends it to sign in.
SESSION_OVER = "event: end\ndata: session\n\n"
# The feed pings Redis this often on its subscription; what it knows is trusted only while the
# answer to a ping sent at most KNOWN_LAG_SECONDS ago has come back (everything announced before
# that ping was heard first: Redis answers a connection in order).
PING_SECONDS = 0.5
KNOWN_LAG_SECONDS = 2.0
# The longest the feed waits for the answer to one of its own commands (not the subscription's).
COMMAND_TIMEOUT_SECONDS = 5.0
# It pings only while what it knows was asked for this recently (current(), by a poll it would
# answer: fastpoll.log_unchanged): an open log on the push relies on its stream and asks nothing,
# so a feed only the streams use costs no pings. Longer than a polling log's interval
# (LOG_POLL_SLOW_SECONDS, 4 s), so that one log polling keeps it pinging between its polls. The
# first ask after an idle spell is answered False (the caller reads Redis, as every poll did before
# the feed pinged) and the first ping goes within a second (IDLE_WAIT_SECONDS); the polls are
# trusted again once its answer came back.
ASKED_SECONDS = 10.0
# How long the feed waits for a message between pings, or while nobody asks: each wait that ends
# empty costs the process about as much CPU as a ping, so it is not shortened while idle.
IDLE_WAIT_SECONDS = 1.0


class TooManyStreams(Exception):
    """This process already holds as many streams as it may (each holds a connection)."""


class Subscription:
    """One open stream's doorbell: set when its log changed, or when the stream must end."""

    def __init__(self, channel: str, live_key: str = "") -> None:
        self.channel = channel
        self.live_key = live_key  # the Redis mark that says its session is live ("" : not checked)
        self.ended = False
        self.session_over = False  # ended because its session is over: the browser need not retry
        self._rung = threading.Event()

    def wait(self, seconds: float) -> bool:
        """Wait up to `seconds` for a change or the end; return whether either came (and reset)."""
        rung = self._rung.wait(max(0.0, seconds))
        if rung:
            self._rung.clear()  # a ring after this is kept for the next wait
        return rung

    def ring(self) -> None:
        """Wake the stream."""
        self._rung.set()


class ChangeFeed:
    """The process's one Redis subscription to log changes, fanned out to its open streams."""

    def __init__(
        self,
        redis_url: str,
        channels: str,
        check_seconds: float = HEARTBEAT_SECONDS,
        max_streams: int = 400,
        sessions_channel: str = "",
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """Listen on the channels matching the pattern `channels` (changes.log_channel("*", "*")),
        and on `sessions_channel`, where ended sessions are announced."""
        self._channels = channels
        self._sessions_channel = sessions_channel
        # Its own client: no read timeout on the listening connection, and a ping every 30 s
        # so a connection dropped without a word is noticed.
        self._redis = Redis.from_url(redis_url, socket_connect_timeout=5, health_check_interval=30)
        # The feed's own commands (the sessions' check) on a client with a read timeout: a Redis
        # gone silent mid-answer must not hang the feed's thread, and with it every open log.
        self._commands = Redis.from_url(
            redis_url, socket_connect_timeout=5, socket_timeout=COMMAND_TIMEOUT_SECONDS
        )
        self._check_seconds = check_seconds
        # Re-entrant: the SIGTERM handler ends the streams from whatever code it interrupted,
        # which may be holding it (under gevent a handler runs in the interrupted greenlet).
        self._lock = threading.RLock()
        self._open: dict[str, set[Subscription]] = {}
        # The process's share of the server's connections that streams may hold; the rest stay
        # free for every other request (sign-in, /healthz, the logs' own fetches).
        self._max_streams = max_streams
        self._count = 0
        self._listening = threading.Event()
        self._thread: threading.Thread | None = None
        self.stopping = False
        # The logs' counters and live sessions as last read, kept while the feed listens.
        self.known = Known()
        # When (monotonic()) the ping last answered was sent: all announced before it was heard.
        self._monotonic = monotonic
        self._caught_up = float("-inf")
        # When (monotonic()) what the feed knows was last asked for: it pings while that is recent.
        self._asked = float("-inf")

    def open(self, channel: str, live_key: str = "") -> Subscription | None:
        """Register a stream for one log's channel, ended when the session whose live mark is
        `live_key` is over; None when Redis cannot be listened to now."""
        if self.stopping:
            return None
        self.start()
        if not self._listening.wait(CONNECT_WAIT_SECONDS):
            return None
        subscription = Subscription(channel, live_key)
        with self._lock:
            if self._count >= self._max_streams:
                raise TooManyStreams(channel)
            self._count += 1
            self._open.setdefault(channel, set()).add(subscription)
        return subscription

    def close(self, subscription: Subscription) -> bool:
        """Forget a stream that ended; return whether it was open (closing again is harmless)."""
        with self._lock:
            streams = self._open.get(subscription.channel)
            if streams is None or subscription not in streams:
                return False
            streams.discard(subscription)
            if not streams:
                del self._open[subscription.channel]
            self._count -= 1
            return True

    def open_count(self) -> int:
        """Return how many streams this process has open."""
        with self._lock:
            return sum(len(streams) for streams in self._open.values())

    def stop(self) -> None:
        """End every stream and stop listening (the process is stopping)."""
        self.stopping = True
        self._end_all()
        self.known.forget_all()

    def current(self, ask: bool = True) -> bool:
        """Whether what the feed knows (`known`) is at most KNOWN_LAG_SECONDS behind Redis; unless
        `ask` is False, the feed also pings (again) for the next ASKED_SECONDS, so it soon is."""
        now = self._monotonic()
        if ask:
            self._asked = now
        return not self.stopping and self._listening.is_set() and now - self._caught_up <= KNOWN_LAG_SECONDS

    def start(self) -> None:
        """Start listening, in the background, unless already listening (or stopped)."""
        thread = self._thread
        if self.stopping or (thread is not None and thread.is_alive()):
            return
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._thread = threading.Thread(target=self._listen, name="log-change-feed", daemon=True)
            self._thread.start()
        _end_streams_on_stop(self)

    def _listen(self) -> None:
        pause = 0.5
        while not self.stopping:
            pubsub = self._redis.pubsub()
            try:
                pubsub.psubscribe(self._channels)
                if self._sessions_channel:
                    pubsub.subscribe(self._sessions_channel)
                # Listening only once Redis confirmed: a change published after open() is heard.
                while pubsub.get_message(timeout=1.0) is None and not self.stopping:
                    pass
                # Nothing read before this is kept: a change announced before it went unheard.
                self.known.forget_all()
                self._listening.set()
                pause = 0.5
                self._hear(pubsub)
            except (RedisError, OSError) as error:
                log.warning("log change feed lost Redis (%s); open logs poll until it is back", error)
            finally:
                self._listening.clear()
                self._caught_up = float("-inf")
                self.known.forget_all()
                # A change may have gone unheard meanwhile: the streams end, and each browser
                # fetches its log when its stream is open again.
                self._end_all()
                pubsub.close()
            if not self.stopping:
                time.sleep(pause)
                pause = min(pause * 2, 10.0)

    def _hear(self, pubsub: Any) -> None:
        """Pass on what the subscription hears, and ping it while asked, until the feed stops or
        Redis is lost."""
        check_at = time.monotonic() + self._check_seconds
        ping_sent: float | None = None
        ping_at = 0.0
        while not self.stopping:
            now = self._monotonic()
            wait = IDLE_WAIT_SECONDS
            if ping_sent is None and now - self._asked <= ASKED_SECONDS:
                if now >= ping_at:
                    ping_sent = now
                    pubsub.ping("feed")
                else:
                    wait = min(wait, ping_at - now)
            # While nobody asks, a first ask waits for its ping at most this long (IDLE_WAIT_SECONDS).
            message = pubsub.get_message(timeout=wait)
            kind = message["type"] if message is not None else None
            if kind == "pmessage":
                self._ring(message["channel"].decode())
            elif kind == "message":
                self.known.forget_sessions()  # some session ended
            elif kind == "pong" and ping_sent is not None:
                self._caught_up = ping_sent
                ping_at = ping_sent + PING_SECONDS
                ping_sent = None
            if time.monotonic() >= check_at:
                self.end_ended_sessions()
                check_at = time.monotonic() + self._check_seconds

    def end_ended_sessions(self) -> None:
        """End the streams whose session is over (signed out, everywhere, deactivated).

        One MGET per process for all its streams' sessions, not a read per stream.
        """
        with self._lock:
            streams = [subscription for group in self._open.values() for subscription in group]
        keys = sorted({subscription.live_key for subscription in streams if subscription.live_key})
        live: set[str] = set()
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            live.update(key for key, value in zip(chunk, self._commands.mget(chunk), strict=True) if value)
        for subscription in streams:
            if subscription.live_key and subscription.live_key not in live:
                subscription.session_over = True
                subscription.ended = True
                subscription.ring()

    def _ring(self, channel: str) -> None:
        # Forgotten before any stream is rung: the fetch a ring causes never finds the old value.
        self.known.forget_log(channel)
        with self._lock:
            streams = list(self._open.get(channel, ()))
        for subscription in streams:
            subscription.ring()

    def _end_all(self) -> None:
        with self._lock:
            streams = [subscription for group in self._open.values() for subscription in group]
        for subscription in streams:
            subscription.ended = True
            subscription.ring()


_FEEDS: weakref.WeakSet[ChangeFeed] = weakref.WeakSet()


def _end_streams_on_stop(feed: ChangeFeed) -> None:
    """End the streams when the server is asked to stop, so it stops now, not at its grace limit.

    Under gunicorn's gevent worker every request runs in the main thread, where the worker's
    SIGTERM handler can be wrapped; elsewhere (threads) Python refuses and the streams end with
    their lifetime or the server's graceful timeout.
    """
    _FEEDS.add(feed)
    try:
        previous = signal.getsignal(signal.SIGTERM)
        if getattr(previous, "_ends_log_streams", False):
            return

        def on_stop(signum: int, frame: Any) -> None:
            for each in list(_FEEDS):
                each.stop()
            if callable(previous):
                previous(signum, frame)
            elif previous == signal.SIG_DFL:
                signal.signal(signum, signal.SIG_DFL)
                os.kill(os.getpid(), signum)

        on_stop._ends_log_streams = True  # type: ignore[attr-defined]
        signal.signal(signal.SIGTERM, on_stop)
    except ValueError:
        pass  # not the main thread


def events(
    subscription: Subscription,
    lifetime: float,
    still_live: Callable[[], bool],
    now: Callable[[], float] = clock.timestamp,
    heartbeat: float = HEARTBEAT_SECONDS,
) -> Iterator[str]:
    """Yield the stream's text: a "changed" event per change (coalesced), a heartbeat comment
    every `heartbeat` seconds while `still_live()` (the session's own timeouts; the feed ends the
    stream when the server ended the session), and the end after `lifetime` seconds."""
    # Sent at once, so the browser knows the stream is open (and fetches what changed before).
    yield f"retry: {RETRY_MILLISECONDS}\n: open\n\n"
    start = now()
    end = start + lifetime
    beat = start + heartbeat
    while not subscription.ended:
        moment = now()
        if moment >= end:
            return
        if moment >= beat:
            if not still_live():
                yield SESSION_OVER
                return
            yield ": heartbeat\n\n"
            beat = moment + heartbeat
        if subscription.wait(min(beat, end) - moment) and not subscription.ended:
            yield "event: changed\ndata: 1\n\n"
    if subscription.session_over:
        yield SESSION_OVER
