"""The email log's "nothing changed" answer, in front of Flask, and the one question behind it.

Every open log asks every few seconds whether anything changed; nearly always nothing did. That
answer needs the signed session cookie and one Redis round trip, nothing else: no request
context, no before/after-request hooks, no rate limiter, no database, no template. This WSGI
middleware gives exactly that answer (204), and passes every other request, and every poll it
cannot answer with certainty, to the Flask app, whose view renders the log.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl

from flask import Flask
from redis import Redis
from redis.exceptions import RedisError
from werkzeug.http import parse_cookie

from webapp import security
from webapp.freshness.counters import log_key, parse_version
from webapp.params import MAX_ID
from webapp.services.accounts import live_key

_LOG_PATH = re.compile(r"/clients/([0-9]{1,10})/emails")
POLL_ROLES = ("clinician", "owner")


def log_unchanged(redis: Redis, session: Any, client_id: int, version: str, now: float) -> bool:
    """Return whether the client's log, shown at `version`, is still current for this session.

    True only when all hold: the session is a clinician's or owner's and has not timed out; the
    version's "unchanged" answer has not run out (a row going stuck, relative times); the log's
    counter still has the version's value; and Redis says the session is still live (one round
    trip for both). Anything else (an unreadable version, a lost counter, Redis down) is False:
    the log is rendered again.
    """
    if not isinstance(session, Mapping) or session.get("role") not in POLL_ROLES:
        return False
    if not security.session_data_is_live(session, now):
        return False
    marker, fresh_until = parse_version(version)
    if not marker or fresh_until is None or now >= fresh_until:
        return False
    try:
        value, live = redis.mget(log_key(session["clinic_id"], client_id), live_key(session.get("sid", "")))
    except (RedisError, KeyError, TypeError):
        return False
    return live is not None and value is not None and value.decode() == marker


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
        session = self._session(cookie)
        return log_unchanged(self.app.extensions["redis"], session, int(match.group(1)), version, time.time())

    def _session(self, cookie: str) -> Any:
        """The session the cookie carries, if its signature verifies and it has not expired."""
        if self._serializer is None:
            self._serializer = self.app.session_interface.get_signing_serializer(self.app)  # type: ignore[attr-defined]
        try:
            return self._serializer.loads(cookie, max_age=self.max_age)
        except Exception:  # noqa: BLE001 - a bad or expired cookie: the full path deals with it
            return None


def install(app: Flask) -> None:
    """Put the fast path in front of the app (outermost, so nothing else runs for it)."""
    app.wsgi_app = UnchangedLogPoll(app.wsgi_app, app)  # type: ignore[method-assign]
