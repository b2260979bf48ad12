"""Operator alerts, grouped into incidents: raising, clearing and resolving them.

An alert names its cause (its kind) and often one email. Alerts of one cause make one incident
per clinic (a stuck email: support tells that clinic) or, for causes that lie with the email
provider, one per provider (a send in doubt during an outage, a refused key); an alert naming no
email belongs to its provider's incident. An incident is opened by its first alert (and logged
once), counts every alert raised into it, and closes by itself once none of its alerts is open:
an email's alert resolves when that email's cause clears (CLEARED), an alert without an email
when its raiser calls `clear`, any alert when support marks it as dealt with. Each email keeps
its own alert, so support's page of that email still names it (webapp/services/incidents.py
reads them for the views).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

import sqlalchemy as sa
from flask import abort, current_app

from webapp import statuses
from webapp.extensions import db
from webapp.models import Email, Incident, OperatorAlert, User, utcnow
from webapp.services import audit
from webapp.services.events import insert_ignoring_duplicates

log = logging.getLogger(__name__)

# Causes that lie with the email provider, not with a clinic: one incident across clinics.
PROVIDER_CAUSES = frozenset({"email_in_doubt", "email_unreported", "provider_auth"})
_WAITING = (statuses.SENDING.key, statuses.PROCESSED.key)
# At most this many ungrouped alerts are grouped per sweep (each costs a lookup or two).
REGROUP_BATCH = 500


def _moved_on() -> sa.ColumnElement[bool]:
    return Email.status.not_in(_WAITING)


# An email's alert of these kinds resolves by itself once this holds for its email.
CLEARED: dict[str, Callable[[], sa.ColumnElement[bool]]] = {
    # Moved on, or held: email_unreported says what became of it.
    "email_stuck": lambda: sa.or_(_moved_on(), Email.send_state == "held"),
    # Settled by the provider's records or an event, or held (email_unreported).
    "email_in_doubt": lambda: sa.or_(_moved_on(), Email.send_state == "held"),
    "email_unreported": lambda: sa.or_(_moved_on(), Email.send_state != "held"),
}


def alert_operators(kind: str, message: str, email: Email | None = None) -> None:
    """Record an alert once while it is open, in its cause's open incident (opened, and logged,
    by the first alert); the caller commits."""
    email_id = email.id if email else None
    open_alert = db.session.execute(
        sa.select(OperatorAlert.id).where(
            OperatorAlert.kind == kind,
            OperatorAlert.resolved_at.is_(None),
            OperatorAlert.email_id.is_(None) if email_id is None else OperatorAlert.email_id == email_id,
        )
    ).first()
    if open_alert is not None:
        log.info("operator alert %s still open: %s", kind, message)
        return
    scope, clinic_id = scope_of(kind, email.clinic_id if email else None, email.provider if email else None)
    incident = open_incident(kind, scope, clinic_id, message)
    log.warning("operator alert %s (incident %s): %s", kind, incident.id, message)
    db.session.add(OperatorAlert(kind=kind, message=message, email_id=email_id, incident_id=incident.id))


def scope_of(kind: str, clinic_id: int | None, provider: str | None) -> tuple[str, int | None]:
    """Return whom an alert's cause touches ("clinic:<id>" or "provider:<name>") and its clinic."""
    if clinic_id is not None and kind not in PROVIDER_CAUSES:
        return f"clinic:{clinic_id}", clinic_id
    return f"provider:{provider or current_app.config['EMAIL_PROVIDER']}", None


def open_incident(kind: str, scope: str, clinic_id: int | None, message: str = "") -> Incident:
    """Return the open incident of a cause and scope, opening it (once, whoever races) if none is."""
    where = (Incident.kind == kind, Incident.scope == scope, Incident.closed_at.is_(None))
    incident = db.session.execute(sa.select(Incident).where(*where)).scalar_one_or_none()
    if incident is not None:
        return incident
    # The unique index on open incidents turns a second opener's insert into nothing.
    row = {"kind": kind, "scope": scope, "clinic_id": clinic_id, "opened_at": utcnow(), "closed_at": None}
    if insert_ignoring_duplicates(Incident, [row]):
        log.error("operator incident opened: %s (%s): %s", kind, scope, message)
    return db.session.execute(sa.select(Incident).where(*where)).scalar_one()


def clear(kind: str, now: datetime | None = None) -> int:
    """Resolve every open alert of a cause that has cleared (an alert naming no email: the key is
    accepted again), closing its incidents; return how many. The caller commits.

    Cheap when nothing is open (one look at the open incidents), so a hot path may call it.
    """
    incidents = sa.select(Incident.id).where(Incident.kind == kind, Incident.closed_at.is_(None))
    if db.session.execute(incidents.limit(1)).first() is None:
        return 0
    now = now or utcnow()
    resolved = _resolve(OperatorAlert.incident_id.in_(incidents), now)
    close_empty_incidents(now)
    return resolved


def resolve_matching(kind: str, message_prefix: str) -> int:
    """Resolve the open alerts of a kind whose message starts so (one that names a case)."""
    now = utcnow()
    resolved = _resolve(
        sa.and_(
            OperatorAlert.kind == kind, OperatorAlert.message.startswith(message_prefix, autoescape=True)
        ),
        now,
    )
    close_empty_incidents(now)
    return resolved


def resolve_cleared(now: datetime) -> int:
    """Resolve the alerts about emails whose cause has cleared, then close incidents left without
    an open alert; return how many alerts were resolved. The caller commits."""
    resolved = 0
    for kind, cleared in CLEARED.items():
        email_cleared = sa.exists().where(Email.id == OperatorAlert.email_id, cleared())
        resolved += _resolve(sa.and_(OperatorAlert.kind == kind, email_cleared), now)
    close_empty_incidents(now)
    return resolved


def close_empty_incidents(now: datetime) -> int:
    """Close the open incidents none of whose alerts is open; return how many."""
    open_alert = sa.exists().where(
        OperatorAlert.incident_id == Incident.id, OperatorAlert.resolved_at.is_(None)
    )
    closed = db.session.execute(
        sa.update(Incident)
        .where(Incident.closed_at.is_(None), ~open_alert)
        .values(closed_at=now)
        .returning(Incident.kind, Incident.scope)
        .execution_options(synchronize_session=False)
    ).all()
    for kind, scope in closed:
        log.warning("operator incident closed: %s (%s)", kind, scope)
    return len(closed)


def regroup(now: datetime) -> int:
    """Put open alerts outside any open incident into their cause's incident (an alert raised just
    as its incident closed, or stored before incidents); return how many. The caller commits."""
    rows = db.session.execute(
        sa.select(OperatorAlert, Email.clinic_id, Email.provider)
        .outerjoin(Email, Email.id == OperatorAlert.email_id)
        .outerjoin(Incident, Incident.id == OperatorAlert.incident_id)
        .where(
            OperatorAlert.resolved_at.is_(None),
            sa.or_(Incident.id.is_(None), Incident.closed_at.is_not(None)),
        )
        .order_by(OperatorAlert.id)
        .limit(REGROUP_BATCH)
    ).all()
    for alert, clinic_id, provider in rows:
        scope, clinic = scope_of(alert.kind, clinic_id, provider)
        alert.incident_id = open_incident(alert.kind, scope, clinic, alert.message).id
    return len(rows)


def resolve_alert(alert_id: int, by: User) -> None:
    """Mark an operator alert as dealt with (404 for an unknown one); its incident closes with its last."""
    alert = db.session.get(OperatorAlert, alert_id)
    if alert is None:
        abort(404)
    if alert.resolved_at is None:
        alert.resolved_at = utcnow()
        audit.record("alert.resolve", by, clinic_id=None, subject_type="operator_alert", subject_id=alert.id)
        db.session.flush()
        close_empty_incidents(alert.resolved_at)
        db.session.commit()


def resolve_incident(incident_id: int, by: User) -> None:
    """Mark every open alert of an incident as dealt with, closing it (404 for an unknown one)."""
    incident = db.session.get(Incident, incident_id)
    if incident is None:
        abort(404)
    if incident.closed_at is None:
        now = utcnow()
        _resolve(OperatorAlert.incident_id == incident.id, now)
        audit.record("incident.resolve", by, clinic_id=None, subject_type="incident", subject_id=incident.id)
        close_empty_incidents(now)
        db.session.commit()


def _resolve(which: sa.ColumnElement[bool], now: datetime) -> int:
    return db.session.execute(
        sa.update(OperatorAlert)
        .where(which, OperatorAlert.resolved_at.is_(None))
        .values(resolved_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount
