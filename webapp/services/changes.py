"""Change markers: how the web layer tells, without the database, that a log has not changed.

Each email carries a version number in the database. Each client's log also has a counter in
Redis, bumped after every commit that changed one of that client's emails; the log poll compares
it with the value it last rendered and answers 204 when they match. The bump is also published
on the log's channel, so an open log's event stream (webapp/services/log_stream.py) tells the
browser at once instead of waiting for its next poll.
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
    """Return the client's log counter, creating it when Redis has lost it."""
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


def marker_matches(clinic_id: int, client_id: int, seen: str, live_key: str) -> bool:
    """Return whether the counter still has the value the browser last rendered, and the session
    whose live mark is `live_key` is live (one round trip for both)."""
    try:
        value, live = current_app.extensions["redis"].mget(log_key(clinic_id, client_id), live_key)
    except RedisError:
        return False
    return live is not None and value is not None and value.decode() == seen


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


@sa.event.listens_for(so.Session, "after_rollback")
def _forget_changes(session: so.Session) -> None:
    session.info.pop("changed_logs", None)
