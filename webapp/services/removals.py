"""Spam-list removal cases: only a verified request from the client's own address lifts a block.

Cases are filed only by the inbound-mail webhook (webapp.services.inbound); nobody can open one by
hand, so nobody can ask on a client's behalf. Support decides; a job lifts the block.
"""

from __future__ import annotations

import sqlalchemy as sa
from flask import abort, current_app

from webapp.extensions import db
from webapp.models import Client, Clinic, OperatorAlert, RemovalRequest, SpamListEntry, User, utcnow
from webapp.providers import get_provider
from webapp.providers.base import ProviderError
from webapp.queue import enqueue
from webapp.services import audit
from webapp.services.sending import alert_operators

LIFT_JOB = "jobs.removals.lift_spam_block"


class DecisionRefused(Exception):
    """The case cannot be decided that way; the message says why."""


def queue() -> list[RemovalRequest]:
    """Return every case, pending ones first, newest first within each group."""
    pending_first = sa.case((RemovalRequest.status == "pending", 0), else_=1)
    return list(
        db.session.execute(
            sa.select(RemovalRequest).order_by(pending_first, RemovalRequest.received_at.desc())
        ).scalars()
    )


def open_alerts() -> list[OperatorAlert]:
    """Return the alerts nobody has resolved yet, newest first."""
    return list(
        db.session.execute(
            sa.select(OperatorAlert)
            .where(OperatorAlert.resolved_at.is_(None))
            .order_by(OperatorAlert.created_at.desc())
            .limit(100)
        ).scalars()
    )


def resolve_alert(alert_id: int, by: User) -> None:
    """Mark an operator alert as dealt with (404 for an unknown one)."""
    alert = db.session.get(OperatorAlert, alert_id)
    if alert is None:
        abort(404)
    if alert.resolved_at is None:
        alert.resolved_at = utcnow()
        audit.record("alert.resolve", by, clinic_id=None, subject_type="operator_alert", subject_id=alert.id)
        db.session.commit()


def get_case(case_id: int) -> RemovalRequest:
    """Return one case or abort with 404."""
    removal = db.session.get(RemovalRequest, case_id)
    if removal is None:
        abort(404)
    return removal


def matching_clients(removal: RemovalRequest) -> list[tuple[str, int]]:
    """Return (clinic name, number of client files) that hold the request's address."""
    rows = db.session.execute(
        sa.select(Clinic.name, sa.func.count(Client.id))
        .join(Client, Client.clinic_id == Clinic.id)
        .where(sa.func.lower(Client.email) == removal.from_address)
        .group_by(Clinic.name)
        .order_by(Clinic.name)
    ).all()
    return [(name, count) for name, count in rows]


def spam_entry(removal: RemovalRequest) -> SpamListEntry | None:
    """Return the spam-list entry the case is about, if the address is on the list."""
    return db.session.execute(
        sa.select(SpamListEntry).where(SpamListEntry.address == removal.from_address)
    ).scalar_one_or_none()


def approve(removal: RemovalRequest, by: User, note: str) -> None:
    """Approve a verified case from an address on file, and lift the block in a job."""
    if removal.verdict != "verified":
        raise DecisionRefused(
            "This request is not proven to come from the address it claims; it cannot be approved."
        )
    if not matching_clients(removal):
        raise DecisionRefused("No client file holds this address; only the client on file can ask.")
    _decide(removal, "approved", by, note)
    enqueue(LIFT_JOB, removal.id)


def reject(removal: RemovalRequest, by: User, note: str) -> None:
    """Close a pending case without lifting the block."""
    _decide(removal, "rejected", by, note)


def lift_block(case_id: int) -> bool:
    """Remove an approved case's address from the provider's and our spam list (idempotent)."""
    removal = db.session.get(RemovalRequest, case_id)
    if removal is None or removal.status != "approved" or removal.lifted_at is not None:
        return False
    try:
        # Idempotent at the provider: removing an address twice is harmless.
        get_provider(current_app.config).remove_spam_report(removal.from_address)
    except ProviderError as error:
        alert_operators(
            "removal_lift_failed",
            f"Removal case {removal.id} was approved but the provider did not lift the block yet "
            f"({error}); it will be tried again.",
        )
        db.session.commit()
        raise
    lifted = db.session.execute(
        sa.update(RemovalRequest)
        .where(RemovalRequest.id == case_id, RemovalRequest.lifted_at.is_(None))
        .values(lifted_at=utcnow())
        .execution_options(synchronize_session=False)
    ).rowcount
    if not lifted:  # another worker finished it first
        db.session.rollback()
        return False
    db.session.execute(sa.delete(SpamListEntry).where(SpamListEntry.address == removal.from_address))
    _audit_for_clinics("removal.lifted", None, removal, removal.from_address)
    db.session.commit()
    return True


def due_lifts() -> list[int]:
    """Return approved cases whose block is not lifted yet (a failed or lost lift job)."""
    return list(
        db.session.execute(
            sa.select(RemovalRequest.id)
            .where(RemovalRequest.status == "approved", RemovalRequest.lifted_at.is_(None))
            .order_by(RemovalRequest.id)
        ).scalars()
    )


def _decide(removal: RemovalRequest, status: str, by: User, note: str) -> None:
    """Decide a pending case exactly once, even when two support users click at the same time."""
    note = note.strip()
    decided = db.session.execute(
        sa.update(RemovalRequest)
        .where(RemovalRequest.id == removal.id, RemovalRequest.status == "pending")
        .values(status=status, decided_by_id=by.id, decided_at=utcnow(), decision_note=note)
        .execution_options(synchronize_session=False)
    ).rowcount
    if not decided:
        db.session.rollback()
        raise DecisionRefused("This case has already been decided.")
    detail = removal.from_address + (f": {note}" if note else "")
    _audit_for_clinics(f"removal.{status}", by, removal, detail)
    db.session.commit()
    db.session.refresh(removal)


def _audit_for_clinics(action: str, by: User | None, removal: RemovalRequest, detail: str) -> None:
    """Audit once in each clinic whose client files hold the address, so its owners see it."""
    clinic_ids = list(
        db.session.execute(
            sa.select(Client.clinic_id)
            .where(sa.func.lower(Client.email) == removal.from_address)
            .distinct()
            .order_by(Client.clinic_id)
        ).scalars()
    )
    for clinic_id in clinic_ids or [None]:
        audit.record(
            action,
            by,
            clinic_id=clinic_id,
            subject_type="removal_request",
            subject_id=removal.id,
            detail=detail,
        )
