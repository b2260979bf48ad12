"""Users and sessions."""

from __future__ import annotations

import secrets
import time

import sqlalchemy as sa
from flask import current_app, session
from flask_login import login_user

from webapp.extensions import db
from webapp.models import ROLES, Clinic, User
from webapp.services import audit

# Compared against when the account does not exist, so both paths take as long.
_DUMMY = User(email="", name="", role="clinician", password_hash="")
_DUMMY.set_password(secrets.token_hex(8))


def authenticate(email: str, password: str) -> User | None:
    """Return the active user with these credentials, or None."""
    user = db.session.execute(
        sa.select(User).where(sa.func.lower(User.email) == email.strip().lower())
    ).scalar_one_or_none()
    if user is None:
        _DUMMY.check_password(password)
        return None
    if not user.check_password(password) or not user.active:
        audit.record("login.failed", None, clinic_id=user.clinic_id, subject_type="user", subject_id=user.id)
        db.session.commit()
        return None
    return user


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
