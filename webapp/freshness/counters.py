"""Change counters: how the web layer tells, without the database, that a log has not changed.

Each email carries a version number in the database. Each client's log also has a counter in
Redis, bumped after every commit that changed one of that client's emails; a rendered log carries
the counter's value in its version (log_version), and the log poll compares the two
(webapp/freshness/fastpoll.py). The bump is also published on the log's channel, so an open log's
event stream (webapp/freshness/stream.py) tells the browser at once instead of waiting for its
next poll.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
import sqlalchemy.orm as so
from flask import Flask, current_app
from redis.exceptions import RedisError

from webapp.models import Email
from webapp.params import whole_number
from webapp.redis_keys import redis_key

log = logging.getLogger(__name__)


def log_key(clinic_id: int, client_id: int, app: Flask | None = None) -> str:
    """Return the Redis key of one client's log counter (scoped by clinic)."""
    return redis_key("emaillog", clinic_id, client_id, app=app)


def log_channel(clinic_id: int | str, client_id: int | str, app: Flask | None = None) -> str:
    """Return the Redis pub/sub channel on which a change to one client's log is announced
    (with "*" for both: the pattern of every log's channel)."""
    return redis_key("emaillog-changed", clinic_id, client_id, app=app)


def mark_changed(email: Email) -> None:
    """Record that something shown about this email changed; Redis is told after commit."""
    email.version = (email.version or 0) + 1
    session = so.object_session(email)
    if session is not None:
        session.info.setdefault("changed_logs", set()).add((email.clinic_id, email.client_id))


def mark_logs_changed(session: Any, clients: Iterable[tuple[int, int]]) -> None:
    """Record that a bulk update (which bumped versions itself) changed these (clinic, client) logs."""
    session.info.setdefault("changed_logs", set()).update((clinic, client) for clinic, client in clients)


def current_marker(clinic_id: int, client_id: int) -> str:
    """Return the client's log counter, creating it when Redis has lost it; from what this process
    knows (webapp/freshness/known.py) when it can: a value behind Redis only costs one more render."""
    feed = current_app.extensions["log_feed"]
    # Used if current, not asked for (stream.ASKED_SECONDS): while the log polls, its polls ask;
    # for a render its stream asked for (or its timed poll, minutes apart) asking would keep the
    # feed pinging for seconds, about twenty pings, to save this one read.
    if feed.current(ask=False):
        known = feed.known.counter(log_channel(clinic_id, client_id))
        if known is not None:
            return known.decode()
    redis = current_app.extensions["redis"]
    key = log_key(clinic_id, client_id)
    try:
        value = redis.get(key)
        if value is None:
            value = redis.incr(key)
    except RedisError as error:
        # The page still renders from the database; the next poll simply renders again.
        log.warning("log change counter unavailable: %s", error)
        return "none"
    return value.decode() if isinstance(value, bytes) else str(value)


def log_version(marker: str, fresh_until: float) -> str:
    """Return the version a rendered log carries: its counter as read before the log (`marker`),
    and until when (a Unix time) the log may be told "unchanged" while the counter stays the same."""
    return f"{marker}-{int(fresh_until)}"


def parse_version(version: str) -> tuple[str, int | None]:
    """Return the counter and the "fresh until" time a log's version carries (None: unreadable)."""
    marker, _, fresh_part = version.partition("-")
    return marker, whole_number(fresh_part)


def attention_count_key(clinic_id: int) -> str:
    """Return the Redis key of a clinic's Needs attention total, dropped whenever one of its logs changes."""
    return redis_key("attention-count", clinic_id)


@sa.event.listens_for(so.Session, "after_commit")
def _publish_changes(session: so.Session) -> None:
    logs = session.info.pop("changed_logs", None)
    if not logs:
        return
    try:
        redis = current_app.extensions["redis"]
        with redis.pipeline(transaction=False) as pipe:
            for clinic_id, client_id in logs:
                pipe.incr(log_key(clinic_id, client_id))
                # Open logs listening on their stream hear of it now (their poll is the fallback).
                pipe.publish(log_channel(clinic_id, client_id), b"1")
            # What needs attention follows from the logs: a changed log may change the total.
            for clinic_id in {clinic_id for clinic_id, _ in logs}:
                pipe.delete(attention_count_key(clinic_id))
            pipe.execute()
    except (RedisError, RuntimeError) as error:
        # A lost bump only costs one full refresh: the next poll re-renders from the database.
        log.warning("could not bump log change counters: %s", error)
    _forget_here(logs)


def _forget_here(logs: set[tuple[int, int]]) -> None:
    """This process's poll answers forget the old counters at once (after the bump: a poll that
    read before it is not kept); every other process hears the announcement (known.py)."""
    try:
        known = current_app.extensions["log_feed"].known
    except RuntimeError:
        return  # no app: nothing known here
    for clinic_id, client_id in logs:
        known.forget_log(log_channel(clinic_id, client_id))


@sa.event.listens_for(so.Session, "after_rollback")
def _forget_changes(session: so.Session) -> None:
    session.info.pop("changed_logs", None)
