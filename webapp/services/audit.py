"""The append-only audit trail."""

from __future__ import annotations

from webapp.extensions import db
from webapp.models import AuditEntry, User, utcnow


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
