"""Spam-list removal cases: only a verified request from the client's own address lifts a block.

Cases are filed only by the inbound-mail webhooks (webapp.services.inbound.filing); nobody can
open one by hand, so nobody can ask on a client's behalf. Support decides; a job lifts the block.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from flask import abort, current_app

from webapp.extensions import db
from webapp.freshness import counters
from webapp.models import Client, Clinic, RemovalRequest, SpamListEntry, User, utcnow
from webapp.providers import get_provider
from webapp.providers.base import LiftResult, ProviderError
from webapp.queue import enqueue
from webapp.services import alerts, audit
from webapp.services.alerts import alert_operators
from webapp.services.inbound.proof import REASONS

LIFT_JOB = "jobs.removals.lift_spam_block"
PROVIDER_REQUEST_ALERT = "removal_provider_request_needed"
QUEUE_PAGE_SIZE = 50


class DecisionRefused(Exception):
    """The case cannot be decided that way; the message says why."""


@dataclass
class Standing:
    """Whether support can approve a case now, in words that sit beside the approve button."""

    approvable: bool
    label: str
    reason: str


def queue_page(view: str, page: int) -> tuple[list[RemovalRequest], int]:
    """Return one page of cases and how many there are: pending oldest first, else newest decided."""
    if view == "pending":
        where = RemovalRequest.status == "pending"
        order = (RemovalRequest.received_at, RemovalRequest.id)
    else:
        where = RemovalRequest.status != "pending"
        order = (RemovalRequest.decided_at.desc(), RemovalRequest.id.desc())
    total = db.session.execute(sa.select(sa.func.count(RemovalRequest.id)).where(where)).scalar() or 0
    cases = db.session.execute(
        sa.select(RemovalRequest)
        .where(where)
        .order_by(*order)
        .offset((page - 1) * QUEUE_PAGE_SIZE)
        .limit(QUEUE_PAGE_SIZE)
    ).scalars()
    return list(cases), total


def standings(cases: list[RemovalRequest]) -> dict[int, Standing]:
    """Return each case's standing, in two queries for the whole page."""
    addresses = {case.from_address for case in cases if case.from_address}
    on_file: dict[str, int] = dict(
        db.session.execute(
            sa.select(sa.func.lower(Client.email), sa.func.count(Client.id))
            .where(sa.func.lower(Client.email).in_(addresses))
            .group_by(sa.func.lower(Client.email))
        ).all()
    )
    listed = set(
        db.session.execute(
            sa.select(SpamListEntry.address).where(SpamListEntry.address.in_(addresses))
        ).scalars()
    )
    return {
        case.id: standing(case, on_file.get(case.from_address, 0), case.from_address in listed)
        for case in cases
    }


def standing(case: RemovalRequest, client_files: int, on_spam_list: bool) -> Standing:
    """Return whether the case can be approved and, if not, why (most fundamental reason first)."""
    evidence = case.evidence or {}
    reasons = evidence.get("reasons") or []
    if case.awaiting_provider:
        return Standing(
            False,
            "Waiting for the email provider",
            "Approved; the email provider lifts this block only on a request from us. Ask it, then "
            "record it here: sending stays blocked until then.",
        )
    if case.status != "pending":
        return Standing(
            False, case.status.capitalize(), case.decision_note or f"This case was {case.status}."
        )
    if case.verdict == "checking":
        return Standing(False, "Checking", "The sender's signature is still being checked.")
    if case.verdict == "unverifiable":
        first = REASONS.get(reasons[0], "") if reasons else ""
        return Standing(False, "Cannot be verified", first or "This mail cannot be verified.")
    if "seen_before" in reasons:
        earlier = evidence.get("seen_in_case")
        return Standing(
            False, f"Duplicate of case {earlier}", f"The same mail was already filed as case {earlier}."
        )
    if case.verdict != "verified":
        first = REASONS.get(reasons[0], reasons[0]) if reasons else ""
        return Standing(False, "Sender not proven", first or "Nothing proves who sent this mail.")
    if not client_files:
        return Standing(
            False,
            "Proven, but on no client file",
            "No client file holds this address; only the client on file can ask.",
        )
    if not on_spam_list:
        return Standing(
            False, "Not on the spam list", "This address is not on the spam list: there is nothing to lift."
        )
    files = "1 client file" if client_files == 1 else f"{client_files} client files"
    return Standing(
        True, "Approvable", f"The sender is proven; the address is on {files} and on the spam list."
    )


def case_standing(case: RemovalRequest) -> Standing:
    """Return one case's standing as it is now."""
    return standings([case])[case.id]


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
    """Approve an approvable case, close the others from its address, and lift the block in a job."""
    if removal.status != "pending":
        raise DecisionRefused("This case has already been decided.")
    now_standing = case_standing(removal)
    if not now_standing.approvable:
        raise DecisionRefused(f"This request cannot be approved: {now_standing.reason}")
    _decide(removal, "approved", by, note)
    enqueue(LIFT_JOB, removal.id)


def reject(removal: RemovalRequest, by: User, note: str) -> None:
    """Close a pending case without lifting the block."""
    _decide(removal, "rejected", by, note)


def lift_block(case_id: int) -> bool:
    """Remove an approved case's address from the provider's and our spam list (idempotent).

    When the provider refuses to lift it through its API, nothing is lifted: the case records what
    to ask the provider for (provider_lift_detail), support is alerted, and the block stays until
    support records that the provider lifted it (record_provider_lift).
    """
    removal = db.session.get(RemovalRequest, case_id)
    if removal is None or removal.status != "approved" or removal.lifted_at is not None:
        return False
    if removal.provider_lift_detail is not None:
        return False  # waiting for support to ask the provider
    try:
        # Idempotent at the provider: removing an address twice is harmless.
        outcome = get_provider(current_app.config).remove_spam_report(removal.from_address)
    except ProviderError as error:
        alert_operators(
            "removal_lift_failed",
            f"Removal case {removal.id} was approved but the provider did not lift the block yet "
            f"({error}); it will be tried again.",
        )
        db.session.commit()
        raise
    if outcome.outcome == "provider_request_needed":
        _provider_request_needed(removal, outcome)
        return False
    return _finish_lift(removal)


def record_provider_lift(removal: RemovalRequest, by: User, note: str = "") -> bool:
    """Record that the provider lifted a block it would not lift through its API; sending resumes."""
    if not removal.awaiting_provider:
        raise DecisionRefused("This case is not waiting for the email provider.")
    note = note.strip()
    done = db.session.execute(
        sa.update(RemovalRequest)
        .where(
            RemovalRequest.id == removal.id,
            RemovalRequest.provider_done_at.is_(None),
            RemovalRequest.lifted_at.is_(None),
        )
        .values(provider_done_at=utcnow(), provider_done_by_id=by.id)
        .execution_options(synchronize_session=False)
    ).rowcount
    if not done:  # another support user recorded it first
        db.session.rollback()
        raise DecisionRefused("This has already been recorded.")
    _audit_for_clinics(
        "removal.provider_lifted", by, removal, removal.from_address + (f": {note}" if note else "")
    )
    # The alert that asked support to act is dealt with (it names the case, having no email).
    alerts.resolve_matching(PROVIDER_REQUEST_ALERT, f"Removal case {removal.id} ")
    lifted = _finish_lift(removal)
    db.session.refresh(removal)
    return lifted


def _provider_request_needed(removal: RemovalRequest, outcome: LiftResult) -> None:
    """Keep the block, and say what support must ask the provider for (once per case)."""
    detail = outcome.detail or "the email provider would not lift the block through its API"
    marked = db.session.execute(
        sa.update(RemovalRequest)
        .where(RemovalRequest.id == removal.id, RemovalRequest.provider_lift_detail.is_(None))
        .values(provider_lift_detail=detail, provider_request_at=utcnow())
        .execution_options(synchronize_session=False)
    ).rowcount
    if not marked:  # another worker recorded it first
        db.session.rollback()
        return
    # The client file's banner now says the provider is being asked.
    _mark_files_changed(removal.from_address)
    _audit_for_clinics("removal.provider_request_needed", None, removal, f"{removal.from_address}: {detail}")
    alert_operators(
        PROVIDER_REQUEST_ALERT,
        f"Removal case {removal.id} was approved, but the provider must be asked to lift the block on "
        f"{removal.from_address}: {detail}",
    )
    db.session.commit()
    db.session.refresh(removal)


def awaiting_provider() -> list[RemovalRequest]:
    """Return the approved cases whose lift support must still ask the provider for, oldest first."""
    return list(
        db.session.execute(
            sa.select(RemovalRequest)
            .where(
                RemovalRequest.status == "approved",
                RemovalRequest.provider_lift_detail.is_not(None),
                RemovalRequest.lifted_at.is_(None),
            )
            .order_by(RemovalRequest.provider_request_at, RemovalRequest.id)
        ).scalars()
    )


def _finish_lift(removal: RemovalRequest) -> bool:
    """Mark the case lifted and take the address off our spam list; False when already done."""
    case_id = removal.id
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
    # Open client files drop their spam banner on their next refresh.
    _mark_files_changed(removal.from_address)
    _audit_for_clinics("removal.lifted", None, removal, removal.from_address)
    db.session.commit()
    return True


def _mark_files_changed(address: str) -> None:
    """Tell open client files with this address to refresh (banner, mark, send form)."""
    counters.mark_logs_changed(
        db.session,
        db.session.execute(
            sa.select(Client.clinic_id, Client.id).where(sa.func.lower(Client.email) == address)
        ).all(),
    )


def due_lifts() -> list[int]:
    """Return approved cases whose block is not lifted yet (a failed or lost lift job)."""
    return list(
        db.session.execute(
            sa.select(RemovalRequest.id)
            .where(
                RemovalRequest.status == "approved",
                RemovalRequest.lifted_at.is_(None),
                RemovalRequest.provider_lift_detail.is_(None),  # support asks the provider instead
            )
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
    if status == "approved":
        _close_others(removal)
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


def _close_others(approved: RemovalRequest) -> None:
    """Close every other pending case from the approved case's address: its request is served."""
    others = db.session.execute(
        sa.select(RemovalRequest).where(
            RemovalRequest.from_address == approved.from_address,
            RemovalRequest.status == "pending",
            RemovalRequest.id != approved.id,
        )
    ).scalars()
    for other in others:
        other.status = "closed"
        other.decided_at = utcnow()
        other.decision_note = f"Closed: case {approved.id} from the same address was approved."
        _audit_for_clinics(
            "removal.closed", None, other, f"{other.from_address}: served by case {approved.id}"
        )
