"""The append-only audit trail."""

from __future__ import annotations

import re

import sqlalchemy as sa

from webapp import timezones
from webapp.extensions import db
from webapp.models import AuditEntry, Client, Email, RemovalRequest, User, utcnow

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
    "email.handled": "Dealt with an email another way",
    "email.handled_undone": "Put an email back on Needs attention (undid “dealt with”)",
    "client.update_email": "Corrected a client's address",
    "email_log.export": "Exported a client's email log",
    "removal.received": "Spam-list removal request received",
    "removal.approved": "Spam-list removal approved",
    "removal.rejected": "Spam-list removal rejected",
    "removal.lifted": "Spam-list block lifted",
    "removal.provider_request_needed": "Spam-list lift needs a request to the email provider",
    "removal.provider_lifted": "Email provider lifted the spam-list block (recorded by support)",
    "removal.closed": "Spam-list removal request closed",
    "alert.resolve": "Dealt with an alert",
    "incident.resolve": "Dealt with an incident (all its alerts)",
    "clinic.timezone": "Changed the clinic's time zone",
    "clinic.identity": "Changed the clinic's details in its emails",
}
# What older entries stored: ids, which the page now turns into names.
LEGACY_EMAIL_DETAIL = re.compile(r"^to client \d+(, resend of email \d+)?$")


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


def describe(entries: list[AuditEntry], clinic_id: int | None, zone: str = "UTC") -> dict[int, str]:
    """Say what each entry is about in names (the email's subject and client, the client, the
    user), in a few queries for the whole page; only the clinic's own records are named. The times
    a sentence names (kept in UTC) are shown in the reader's `zone`, labelled."""
    wanted: dict[str, set[int]] = {}
    for entry in entries:
        if entry.subject_id is not None:
            wanted.setdefault(entry.subject_type, set()).add(entry.subject_id)
    emails = _by_id(Email, wanted.get("email"), clinic_id)
    clients = _by_id(Client, wanted.get("client"), clinic_id)
    users = _by_id(User, wanted.get("user"), clinic_id)
    cases = _by_id(RemovalRequest, wanted.get("removal_request"), None)
    described = {}
    for entry in entries:
        detail = entry.detail or ""
        subject = entry.subject_id
        if entry.subject_type == "email":
            email = emails.get(subject)
            named = f"“{email.subject}” to {email.client.name} <{email.to_address}>" if email else "an email"
            if email is not None and email.resend_of is not None:
                named += f", resend of the email of {timezones.utc_stamp(email.resend_of.created_at)}"
            described[entry.id] = named if not detail or LEGACY_EMAIL_DETAIL.match(detail) else detail
        elif entry.subject_type == "client":
            client = clients.get(subject)
            described[entry.id] = f"{client.name}: {detail}" if client else detail
        elif entry.subject_type == "user":
            user = users.get(subject)
            who = f"{user.name} <{user.email}>" if user else ""
            described[entry.id] = f"{who}{' · ' if who and detail else ''}{detail}" if user else detail
        elif entry.subject_type == "removal_request":
            case = cases.get(subject)
            described[entry.id] = detail or (case.from_address if case else "")
        else:
            described[entry.id] = detail
    return {entry_id: timezones.restamp(sentence, zone) for entry_id, sentence in described.items()}


def _by_id(model: type, ids: set[int] | None, clinic_id: int | None) -> dict:
    if not ids:
        return {}
    select = sa.select(model).where(model.id.in_(ids))
    if clinic_id is not None and hasattr(model, "clinic_id"):
        select = select.where(model.clinic_id == clinic_id)
    return {row.id: row for row in db.session.execute(select).scalars()}
