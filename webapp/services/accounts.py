"""Users and sessions."""

from __future__ import annotations

import secrets
import time
from functools import lru_cache

import sqlalchemy as sa
from flask import current_app, session
from flask_login import login_user
from werkzeug.security import check_password_hash, generate_password_hash

from webapp.extensions import db
from webapp.models import ROLES, Clinic, User
from webapp.services import audit
from webapp.services.login_throttle import LoginThrottle


class TooSoon(Exception):
    """Too many failed sign-ins for this account from this address: wait before the next."""

    def __init__(self, seconds: int) -> None:
        super().__init__(f"try again in {seconds} seconds")
        self.seconds = seconds


def authenticate(email: str, password: str, address: str) -> User | None:
    """Return the active user with these credentials, or None; raise TooSoon while delayed.

    A failure takes the same work whether the account exists or not (a password hash of the
    configured kind, one audit row, one commit), so its timing does not tell which.
    """
    throttle: LoginThrottle = current_app.extensions["login_throttle"]
    wait = throttle.wait_seconds(email, address)
    if wait:
        raise TooSoon(wait)
    user = db.session.execute(
        sa.select(User).where(sa.func.lower(User.email) == email.strip().lower())
    ).scalar_one_or_none()
    if user is None:
        check_password_hash(_dummy_hash(current_app.config["PASSWORD_HASH_METHOD"]), password)
        # No clinic to tell; the row is the platform's record of attempts on unknown accounts.
        audit.record("login.failed", None, clinic_id=None, subject_type="user", detail="no such account")
    elif not user.check_password(password) or not user.active:
        audit.record("login.failed", None, clinic_id=user.clinic_id, subject_type="user", subject_id=user.id)
    else:
        throttle.record_success(email, address)
        return user
    db.session.commit()
    throttle.record_failure(email, address)
    return None


@lru_cache(maxsize=4)
def _dummy_hash(method: str) -> str:
    """A hash of the configured kind to check unknown accounts against, so both paths cost the same."""
    return generate_password_hash(secrets.token_hex(8), method=method)


def start_session(user: User) -> None:
    """Begin a fresh session for this user (a new session, never the pre-login one)."""
    session.clear()
    login_user(user)
    now = int(time.time())
    session["sid"] = secrets.token_urlsafe(16)
    session["login_at"] = now
    session["seen_at"] = now
    session["clinic_id"] = user.clinic_id
    session["role"] = user.role
    session.permanent = True
    audit.record("login", user, clinic_id=user.clinic_id, subject_type="user", subject_id=user.id)
    db.session.commit()


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
