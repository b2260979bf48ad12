"""The email log's "nothing changed" answer, in front of Flask, and the one question behind it.

Every open log asks every few seconds whether anything changed; nearly always nothing did. That
answer needs the signed session cookie, the log's change counter and the session's live mark,
nothing else: no request context, no before/after-request hooks, no rate limiter, no database,
no template. This WSGI middleware gives exactly that answer (204), and passes every other
request, and every poll it cannot answer with certainty, to the Flask app, whose view renders the
log. The counter and the mark come from what the process's change feed knows (known.py) while it
is current, else from one Redis round trip (then kept); a cookie verified once is not verified
again (its signature is its content).
"""

from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl

from flask import Flask
from redis import Redis
from redis.exceptions import RedisError
from werkzeug.http import parse_cookie

from webapp import security
from webapp.freshness.counters import log_channel, log_key, parse_version
from webapp.freshness.stream import ChangeFeed
from webapp.params import MAX_ID
from webapp.services.accounts import live_key

_LOG_PATH = re.compile(r"/clients/([0-9]{1,10})/emails")
POLL_ROLES = ("clinician", "owner")
# Sent by the browser when its log's stream said it changed: the answer then comes from Redis
# itself, never from what this process knows (another process's stream may have heard it first).
CHANGED_HEADER = "HTTP_X_LOG_CHANGED"
# Verified session cookies kept per process (each a few hundred bytes); past it, the oldest goes.
MAX_COOKIES = 10_000


def log_unchanged(
    redis: Redis,
    session: Any,
    client_id: int,
    version: str,
    now: float,
    app: Flask | None = None,
    feed: ChangeFeed | None = None,
) -> bool:
    """Return whether the client's log, shown at `version`, is still current for this session.

    True only when all hold: the session is a clinician's or owner's and has not timed out; the
    version's "unchanged" answer has not run out (a row going stuck, relative times); the log's
    counter still has the version's value; and the session is still live. The counter and the
    live mark come from what `feed` knows while it is current, else from Redis (one round trip
    for both, kept for the next poll). Anything else (an unreadable version, a lost counter, Redis
    down) is False: the log is rendered again.
    """
    if not isinstance(session, Mapping) or session.get("role") not in POLL_ROLES:
        return False
    if not security.session_data_is_live(session, now):
        return False
    marker, fresh_until = parse_version(version)
    if not marker or fresh_until is None or now >= fresh_until:
        return False
    try:
        clinic_id, sid = session["clinic_id"], session.get("sid", "")
        live_mark = live_key(sid, app)
        channel = log_channel(clinic_id, client_id, app)
    except (KeyError, TypeError):
        return False
    known = feed.known if feed is not None else None
    if known is not None and feed.current():
        value = known.answer(channel, live_mark)
        if value is not None:
            return value == marker.encode()
    generation = known.generation if known is not None else 0
    try:
        value, live = redis.mget(log_key(clinic_id, client_id, app), live_mark)
    except RedisError:
        return False
    if known is not None and feed.current():
        known.keep(generation, channel, value, live_mark, live is not None)
    return live is not None and value is not None and value == marker.encode()


class UnchangedLogPoll:
    """WSGI middleware: answer an unchanged email-log poll with 204 from the cookie and Redis alone."""

    def __init__(self, wsgi_app: Callable[..., Iterable[bytes]], app: Flask) -> None:
        self.wsgi_app = wsgi_app
        self.app = app
        self.cookie_name = app.config.get("SESSION_COOKIE_NAME", "session")
        self.max_age = int(app.permanent_session_lifetime.total_seconds())
        self.trusted_hosts = app.config.get("TRUSTED_HOSTS")
        self.headers = [(name, value) for name, value in security.security_headers_for_204()]
        self._serializer: Any = None
        self._lock = threading.Lock()
        # Verified cookies: the session each carries and when it was signed (its signature is
        # its content, so the same cookie verifies the same way until it is too old).
        self._sessions: OrderedDict[str, tuple[Any, int]] = OrderedDict()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") == "GET" and self._unchanged(environ):
            headers = self.headers
            if environ.get("wsgi.url_scheme") == "https" or environ.get("HTTP_X_FORWARDED_PROTO") == "https":
                headers = [*headers, ("Strict-Transport-Security", "max-age=31536000; includeSubDomains")]
            start_response("204 NO CONTENT", headers)
            return []
        return self.wsgi_app(environ, start_response)

    def _unchanged(self, environ: dict[str, Any]) -> bool:
        """Whether the poll may be told "unchanged"; False sends it down the full path."""
        match = _LOG_PATH.fullmatch(environ.get("PATH_INFO", ""))
        if match is None or int(match.group(1)) > MAX_ID:
            return False
        if self.trusted_hosts is not None:
            host = environ.get("HTTP_HOST", "").rsplit(":", 1)[0]
            if host not in self.trusted_hosts:
                return False  # Flask refuses it
        version = dict(parse_qsl(environ.get("QUERY_STRING", ""))).get("v", "")
        if not version:
            return False
        cookie = parse_cookie(environ.get("HTTP_COOKIE", "")).get(self.cookie_name)
        if not cookie:
            return False
        now = time.time()
        session = self._session(cookie, now)
        feed = self.app.extensions["log_feed"]
        if not feed.current():
            feed.start()  # what it knows answers the polls once it listens
        if environ.get(CHANGED_HEADER):
            feed = None
        redis = self.app.extensions["redis"]
        return log_unchanged(redis, session, int(match.group(1)), version, now, self.app, feed)

    def _session(self, cookie: str, now: float) -> Any:
        """The session the cookie carries, if its signature verifies and it has not expired."""
        kept = self._sessions.get(cookie)
        if kept is None:
            if self._serializer is None:
                self._serializer = self.app.session_interface.get_signing_serializer(self.app)  # type: ignore[attr-defined]
            try:
                session, signed = self._serializer.loads(cookie, max_age=self.max_age, return_timestamp=True)
            except Exception:  # noqa: BLE001 - a bad or expired cookie: the full path deals with it
                return None
            kept = (session, int(signed.timestamp()))
            with self._lock:
                if len(self._sessions) >= MAX_COOKIES:
                    self._sessions.popitem(last=False)
                self._sessions[cookie] = kept
        session, signed = kept
        # As the signature's own check: not older than the cookie's lifetime, nor from the future.
        return session if 0 <= int(now) - signed <= self.max_age else None


def install(app: Flask) -> None:
    """Put the fast path in front of the app (outermost, so nothing else runs for it)."""
    app.wsgi_app = UnchangedLogPoll(app.wsgi_app, app)  # type: ignore[method-assign]
