"""Clinic owners manage their clinic's users; every change is audited."""

from __future__ import annotations

import sqlalchemy as sa
from flask_sqlalchemy.pagination import Pagination

from webapp import timezones
from webapp.extensions import db
from webapp.models import AuditEntry, Clinic, User
from webapp.services import accounts, audit


class StaffError(Exception):
    """The change is not allowed; the message says why."""


def clinic_users(clinic_id: int) -> list[User]:
    """Return the clinic's users, by name."""
    return list(
        db.session.execute(sa.select(User).where(User.clinic_id == clinic_id).order_by(User.name)).scalars()
    )


# One answer whether the address belongs to someone of this clinic (the owner sees them in the
# list anyway) or of any other: which clinics a person works for is theirs to tell.
ADDRESS_TAKEN = (
    "This address cannot be used for a new account. If the person is not in the list below, ask them "
    "for another address (their work address at this clinic, say), or contact support."
)


def add_user(owner: User, email: str, name: str, role: str, password: str) -> User:
    """Add a clinician or owner to the owner's clinic."""
    if role not in ("clinician", "owner"):
        raise StaffError("Owners can add clinicians and owners only.")
    if db.session.execute(
        sa.select(User.id).where(sa.func.lower(User.email) == email.strip().lower())
    ).first():
        raise StaffError(ADDRESS_TAKEN)
    clinic = db.session.get(Clinic, owner.clinic_id)
    try:
        user = accounts.create_user(email, name, role, password, clinic, actor=owner)
        db.session.commit()
    except sa.exc.IntegrityError:
        # Another request added the same address a moment ago.
        db.session.rollback()
        raise StaffError(ADDRESS_TAKEN) from None
    return user


def set_timezone(owner: User, name: str) -> None:
    """Set the time zone the owner's clinic reads its times in (audited)."""
    if not timezones.is_valid(name):
        raise StaffError(f"{name} is not a time zone we know.")
    clinic = db.session.get(Clinic, owner.clinic_id)
    if clinic.timezone == name:
        return
    audit.record(
        "clinic.timezone",
        owner,
        clinic_id=clinic.id,
        subject_type="clinic",
        subject_id=clinic.id,
        detail=f"{clinic.timezone} → {name}",
    )
    clinic.timezone = name
    db.session.commit()


def set_active(owner: User, user_id: int, *, active: bool) -> bool:
    """Activate or deactivate a user of the owner's own clinic; False for anyone else's."""
    user = db.session.execute(
        sa.select(User).where(User.id == user_id, User.clinic_id == owner.clinic_id)
    ).scalar_one_or_none()
    if user is None:
        return False
    if user.id == owner.id and not active:
        raise StaffError("You cannot deactivate your own account.")
    user.active = active
    if not active:
        accounts.end_all_sessions(user)  # now, not at their next request's check
    audit.record(
        "user.activate" if active else "user.deactivate",
        owner,
        clinic_id=owner.clinic_id,
        subject_type="user",
        subject_id=user.id,
        detail=user.email,
    )
    db.session.commit()
    return True


def audit_trail(clinic_id: int, page: int) -> Pagination:
    """Return one page of the clinic's audit trail, newest first."""
    select = (
        sa.select(AuditEntry)
        .where(AuditEntry.clinic_id == clinic_id)
        .order_by(AuditEntry.at.desc(), AuditEntry.id.desc())
    )
    return db.paginate(select, page=page, per_page=50, error_out=False)
