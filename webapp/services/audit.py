"""The append-only audit trail."""

from __future__ import annotations

from webapp.extensions import db
from webapp.models import AuditEntry, User, utcnow

# What each action means, in the words the audit page shows clinic owners.
LABELS = {
    "login": "Signed in",
    "login.failed": "Failed sign-in",
    "logout.everywhere": "Signed out everywhere",
    "user.create": "Added a user",
    "user.activate": "Reactivated a user",
    "user.deactivate": "Deactivated a user",
    "email.send": "Sent an email",
    "email.resend": "Resent an email",
    "client.update_email": "Corrected a client's address",
    "email_log.export": "Exported a client's email log",
    "removal.received": "Spam-list removal request received",
    "removal.approved": "Spam-list removal approved",
    "removal.rejected": "Spam-list removal rejected",
    "removal.lifted": "Spam-list block lifted",
}


def record(
    action: str,
    actor: User | None,
    *,
    clinic_id: int | None,
    subject_type: str = "",
    subject_id: int | None = None,
    detail: str = "",
) -> None:
    """Add one audit line to the current transaction (the caller commits)."""
    db.session.add(
        AuditEntry(
            at=utcnow(),
            clinic_id=clinic_id,
            actor_id=actor.id if actor is not None and actor.is_authenticated else None,
            action=action,
            subject_type=subject_type,
            subject_id=subject_id,
            detail=detail,
        )
    )


def label(action: str) -> str:
    """Return the plain-words name of an audit action (the code itself when unknown)."""
    return LABELS.get(action, action)
