"""Users and sessions."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import secrets
import time
from datetime import timedelta
from functools import lru_cache

import sqlalchemy as sa
import sqlalchemy.orm as so
from flask import Flask, current_app
from redis.exceptions import RedisError
from werkzeug.security import check_password_hash, generate_password_hash

from webapp.extensions import db
from webapp.models import ROLES, AuditEntry, Clinic, User, UserSession, utcnow
from webapp.redis_keys import redis_key
from webapp.services import audit
from webapp.services.login_throttle import LoginThrottle

log = logging.getLogger(__name__)

IDLE_TIMEOUT_SECONDS = 30 * 60
ABSOLUTE_TIMEOUT_SECONDS = 8 * 60 * 60


class TooSoon(Exception):
    """Too many failed sign-ins for this account from this address: wait before the next."""

    def __init__(self, seconds: int) -> None:
        super().__init__(f"try again in {seconds} seconds")
        self.seconds = seconds


def authenticate(email: str, password: str, address: str) -> User | None:
    """Return the active user with these credentials, or None; raise TooSoon while delayed.

    A failure takes the same work whether the account exists or not (a password hash of the
    configured kind, one audit row, one commit), and is answered no sooner than
    LOGIN_FAILURE_SECONDS after it began: what little still differs (a foreign-key check of the
    audit row) does not show in its timing either.
    """
    started = time.perf_counter()
    throttle: LoginThrottle = current_app.extensions["login_throttle"]
    wait = throttle.wait_seconds(email, address)
    if wait:
        raise TooSoon(wait)
    # Columns, not the entity: loading a User only for existing accounts would cost time.
    account = db.session.execute(
        sa.select(User.id, User.clinic_id, User.password_hash, User.active).where(
            sa.func.lower(User.email) == email.strip().lower()
        )
    ).first()
    method = current_app.config["PASSWORD_HASH_METHOD"]
    stored_hash = account.password_hash if account else _dummy_hash(method)
    if check_password_hash(stored_hash, password) and account is not None and account.active:
        throttle.record_success(email, address)
        return db.session.get(User, account.id)
    audit.record(
        "login.failed",
        None,
        # No account, no clinic to tell: the row is the platform's record of the attempt.
        clinic_id=account.clinic_id if account else None,
        subject_type="user",
        subject_id=account.id if account else None,
        detail="" if account else "no such account",
    )
    db.session.commit()
    throttle.record_failure(email, address)
    time.sleep(max(0.0, started + current_app.config["LOGIN_FAILURE_SECONDS"] - time.perf_counter()))
    return None


@lru_cache(maxsize=4)
def _dummy_hash(method: str) -> str:
    """A hash of the configured kind to check unknown accounts against, so both paths cost the same."""
    return generate_password_hash(secrets.token_hex(8), method=method)


def start_session(user: User) -> tuple[str, int]:
    """Record a new server-side session for the user; return its id and start (epoch seconds).

    The caller puts both into the browser's fresh session (webapp/auth/routes.py).
    """
    now = utcnow()
    sid = secrets.token_urlsafe(32)
    # Sessions past the absolute timeout are dead anyway: forget this user's.
    db.session.execute(
        sa.delete(UserSession).where(
            UserSession.user_id == user.id,
            UserSession.created_at < now - timedelta(seconds=ABSOLUTE_TIMEOUT_SECONDS),
        )
    )
    db.session.add(UserSession(sid_hash=sid_hash(sid), user_id=user.id, created_at=now))
    db.session.flush()
    _end_oldest_sessions(user.id, current_app.config["SESSIONS_PER_USER"])
    audit.record("login", user, clinic_id=user.clinic_id, subject_type="user", subject_id=user.id)
    db.session.commit()
    _set_live(sid, ABSOLUTE_TIMEOUT_SECONDS)
    # The browser session's timeouts run on real time, as its live mark's expiry in Redis does (and
    # as security.py reads them), never on the app's clock, which a test sets to a day of its own.
    return sid, int(time.time())


def session_user(user_id: int, sid: str) -> User | None:
    """Return the user of a session the server has not ended, or None."""
    if not sid:
        return None
    return db.session.execute(
        _session_user_statement(), {"user_id": user_id, "sid_hash": sid_hash(sid)}
    ).scalar_one_or_none()


@lru_cache(maxsize=1)
def _session_user_statement() -> sa.Select:
    # Built once: every request runs it, and building it and its cache key cost as much as its
    # round trip. Its parameters are bound at each execution.
    return (
        sa.select(User)
        .join(UserSession, UserSession.user_id == User.id)
        .where(
            User.id == sa.bindparam("user_id"),
            UserSession.sid_hash == sa.bindparam("sid_hash"),
            UserSession.ended_at.is_(None),
        )
        # Every page shows the clinic's name and times in its zone: one query, not two.
        .options(sa.orm.joinedload(User.clinic))
    )


def why_ended(user_id: int | None, sid: str) -> str:
    """Say why the server no longer accepts a session: "everywhere" (its user signed out
    everywhere since it began), "deactivated", "changed" (the account is gone), or "ended"."""
    row = db.session.execute(
        sa.select(UserSession.created_at, User.active)
        .join(User, User.id == UserSession.user_id)
        .where(UserSession.sid_hash == sid_hash(sid), UserSession.user_id == user_id)
    ).first()
    if row is None:
        return "changed"
    if not row.active:
        return "deactivated"
    everywhere = db.session.execute(
        sa.select(AuditEntry.id)
        .where(
            AuditEntry.action == "logout.everywhere",
            AuditEntry.subject_type == "user",
            AuditEntry.subject_id == user_id,
            AuditEntry.at >= row.created_at,
        )
        .limit(1)
    ).first()
    return "everywhere" if everywhere else "ended"


def end_session(sid: str) -> None:
    """End one session (sign-out): its cookie, and every copy of it, stops working."""
    if sid:
        _end(UserSession.sid_hash == sid_hash(sid))
        db.session.commit()


def end_all_sessions(user: User) -> None:
    """End every session of the user (sign out everywhere, deactivation); the caller commits."""
    _end(UserSession.user_id == user.id)


def sign_out_everywhere(user: User) -> None:
    """End every session of the user at their own request, and audit it."""
    end_all_sessions(user)
    audit.record("logout.everywhere", user, clinic_id=user.clinic_id, subject_type="user", subject_id=user.id)
    db.session.commit()


def _end_oldest_sessions(user_id: int, keep: int) -> None:
    """End the user's live sessions beyond the newest `keep`: each may hold open log streams (and
    with them the server's connections), so one account cannot sign in without end."""
    oldest = (
        sa.select(UserSession.id)
        .where(UserSession.user_id == user_id, UserSession.ended_at.is_(None))
        .order_by(UserSession.created_at.desc(), UserSession.id.desc())
        .offset(keep)
    )
    _end(UserSession.id.in_(oldest.scalar_subquery()))


def _end(condition: sa.ColumnElement[bool]) -> None:
    ended = db.session.execute(
        sa.update(UserSession)
        .where(condition, UserSession.ended_at.is_(None))
        .values(ended_at=utcnow())
        .returning(UserSession.sid_hash)
        .execution_options(synchronize_session=False)
    ).scalars()
    # Redis is told after the commit (below), so a rolled-back end leaves the session alive.
    db.session.info.setdefault("ended_sessions", set()).update(ended)


def sid_hash(sid: str) -> str:
    """Return the stored form of a session id."""
    return hashlib.sha256(sid.encode()).hexdigest()


def live_key(sid: str, app: Flask | None = None) -> str:
    """Return the Redis key that says a session is live (the log poll reads it, not the database)."""
    return redis_key("session-live", sid_hash(sid), app=app)


def sessions_ended_channel(app: Flask | None = None) -> str:
    """Return the Redis channel on which ended sessions are announced (after their marks went)."""
    return redis_key("sessions-ended", app=app)


def keep_live(sid: str, login_at: int) -> None:
    """Mark a session the database just confirmed as live again, in case Redis lost the mark."""
    remaining = ABSOLUTE_TIMEOUT_SECONDS - (int(time.time()) - login_at)
    if not sid or remaining <= 0:
        return
    feed = current_app.extensions["log_feed"]
    # Used if current, not asked for: as the log's counter (counters.current_marker).
    if feed.current(ask=False) and feed.known.is_live(live_key(sid)):
        return  # this process read the mark and heard of no end since: no round trip
    _set_live(sid, remaining, only_if_missing=True)


def _set_live(sid: str, seconds: int, only_if_missing: bool = False) -> None:
    try:
        current_app.extensions["redis"].set(live_key(sid), b"1", ex=seconds, nx=only_if_missing)
    except RedisError as error:
        # Without the mark the log poll renders from the database, which knows the session.
        log.warning("session mark unavailable: %s", error)


@sa.event.listens_for(so.Session, "after_commit")
def _forget_ended_sessions(db_session: so.Session) -> None:
    hashes = db_session.info.pop("ended_sessions", None)
    if not hashes:
        return
    try:
        with current_app.extensions["redis"].pipeline(transaction=False) as pipe:
            pipe.delete(*(redis_key("session-live", value) for value in hashes))
            # After the marks went, in this order: every web process forgets which sessions it
            # knew to be live (webapp/freshness/known.py).
            pipe.publish(sessions_ended_channel(), b"1")
            pipe.execute()
    except (RedisError, RuntimeError) as error:
        # The database has ended them: every request but the log's "nothing changed" answer
        # already refuses them, and that answer carries no data.
        log.warning("could not drop the marks of ended sessions: %s", error)
    # This process at once (after the marks went: a poll that read before is not kept).
    with contextlib.suppress(RuntimeError):
        current_app.extensions["log_feed"].known.forget_sessions()


@sa.event.listens_for(so.Session, "after_rollback")
def _keep_sessions(db_session: so.Session) -> None:
    db_session.info.pop("ended_sessions", None)


def create_user(
    email: str, name: str, role: str, password: str, clinic: Clinic | None, actor: User | None = None
) -> User:
    """Create a user (support users belong to no clinic); the caller commits."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    if (role == "support") != (clinic is None):
        raise ValueError("support users belong to no clinic; every other user belongs to one")
    user = User(email=email.strip().lower(), name=name, role=role, clinic_id=clinic.id if clinic else None)
    user.set_password(password, current_app.config["PASSWORD_HASH_METHOD"])
    db.session.add(user)
    db.session.flush()
    audit.record(
        "user.create",
        actor,
        clinic_id=user.clinic_id,
        subject_type="user",
        subject_id=user.id,
        detail=f"{role} {user.email}",
    )
    return user
