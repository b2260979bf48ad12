"""Reading operator alerts and their incidents, for support's pages and /metrics: read-only.

webapp/services/alerts.py raises, groups and resolves them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa
from flask import abort

from webapp.extensions import db
from webapp.models import Client, Clinic, Email, Incident, OperatorAlert

# An incident lists this many of its emails where incidents are listed; its own page lists more.
EMAILS_SHOWN = 10
EMAILS_ON_PAGE = 1000
# Causes in support's words; a kind not named here shows as itself.
CAUSES = {
    "email_stuck": "Emails stuck in Sending or Processed",
    "email_in_doubt": "Sends in doubt: the provider's answer was lost",
    "email_unreported": "Emails the provider accepted but has not reported on",
    "provider_auth": "The email provider refused our API key",
    "removal_provider_request_needed": "Spam-list lifts the provider must be asked for",
    "removal_lift_failed": "Spam-list lifts that failed",
    "removal_check_failed": "Removal mails that could not be checked",
    "inbound_parsed_mode": "Removal mails without their raw MIME",
}


def cause(kind: str) -> str:
    """Return an alert kind in support's words (the kind itself when it has none)."""
    return CAUSES.get(kind, kind)


@dataclass
class AlertRow:
    """An alert (or an email an incident names) with what support needs to act on it."""

    alert: OperatorAlert
    email: Email | None
    client: Client | None
    clinic: Clinic | None


@dataclass
class IncidentView:
    """An incident with its figures: how many alerts, which emails, what the latest one says."""

    incident: Incident
    cause: str  # the kind, in support's words
    where: str  # the clinic's name, or "<provider> (every clinic)"
    alerts: int  # raised into it
    open_alerts: int
    emails: int  # distinct emails it names
    last_raised_at: datetime
    message: str  # its latest alert's
    rows: list[AlertRow] = field(default_factory=list)  # the first emails it names, oldest first


def open_incidents(emails_shown: int = EMAILS_SHOWN) -> list[IncidentView]:
    """Return the open incidents, newest alert first, each with its first `emails_shown` emails."""
    incidents = list(db.session.execute(sa.select(Incident).where(Incident.closed_at.is_(None))).scalars())
    views = _views(incidents, emails_shown)
    return sorted(views, key=lambda view: (view.last_raised_at, view.incident.id), reverse=True)


def incident_view(incident_id: int) -> IncidentView:
    """Return one incident (open or closed) with every email it names; 404 for an unknown one."""
    incident = db.session.get(Incident, incident_id)
    if incident is None:
        abort(404)
    return _views([incident], EMAILS_ON_PAGE)[0]


def _views(incidents: list[Incident], emails_shown: int) -> list[IncidentView]:
    """Build the views of several incidents in four queries, however many there are."""
    if not incidents:
        return []
    ids = [incident.id for incident in incidents]
    figures = {
        row.incident_id: row
        for row in db.session.execute(
            sa.select(
                OperatorAlert.incident_id,
                sa.func.count(OperatorAlert.id).label("alerts"),
                sa.func.count(sa.case((OperatorAlert.resolved_at.is_(None), 1))).label("open_alerts"),
                sa.func.count(sa.distinct(OperatorAlert.email_id)).label("emails"),
                sa.func.max(OperatorAlert.id).label("last"),
            )
            .where(OperatorAlert.incident_id.in_(ids))
            .group_by(OperatorAlert.incident_id)
        )
    }
    last_ids = [row.last for row in figures.values()]
    latest = {
        alert.incident_id: alert
        for alert in db.session.execute(
            sa.select(OperatorAlert).where(OperatorAlert.id.in_(last_ids))
        ).scalars()
    }
    rows = _first_emails(ids, emails_shown)
    views = []
    for incident in incidents:
        figure, last = figures.get(incident.id), latest.get(incident.id)
        provider = incident.scope.removeprefix("provider:")
        views.append(
            IncidentView(
                incident=incident,
                cause=cause(incident.kind),
                where=incident.clinic.name if incident.clinic else f"{provider} (every clinic)",
                alerts=figure.alerts if figure else 0,
                open_alerts=figure.open_alerts if figure else 0,
                emails=figure.emails if figure else 0,
                last_raised_at=last.created_at if last else incident.opened_at,
                message=last.message if last else "",
                rows=rows.get(incident.id, []),
            )
        )
    return views


def _first_emails(incident_ids: list[int], limit: int) -> dict[int, list[AlertRow]]:
    """Return the first `limit` emails each incident names, oldest alert first."""
    numbered = (
        sa.select(
            OperatorAlert.id,
            sa.func.row_number()
            .over(partition_by=OperatorAlert.incident_id, order_by=OperatorAlert.id)
            .label("position"),
        )
        .where(OperatorAlert.incident_id.in_(incident_ids), OperatorAlert.email_id.is_not(None))
        .subquery()
    )
    first = sa.select(numbered.c.id).where(numbered.c.position <= limit)
    found: dict[int, list[AlertRow]] = {}
    for row in _rows(OperatorAlert.id.in_(first), limit=limit * len(incident_ids)):
        found.setdefault(row.alert.incident_id, []).append(row)
    return found


def loose_alert_rows() -> list[AlertRow]:
    """Return the open alerts outside any open incident (until the sweep groups them), newest first."""
    in_open_incident = sa.exists().where(
        Incident.id == OperatorAlert.incident_id, Incident.closed_at.is_(None)
    )
    return _rows(OperatorAlert.resolved_at.is_(None), ~in_open_incident, limit=100, newest_first=True)


def open_alerts() -> list[OperatorAlert]:
    """Return every open alert, newest first."""
    return list(
        db.session.execute(
            sa.select(OperatorAlert)
            .where(OperatorAlert.resolved_at.is_(None))
            .order_by(OperatorAlert.created_at.desc(), OperatorAlert.id.desc())
        ).scalars()
    )


def alerted_email(email_id: int) -> tuple[Email, list[OperatorAlert]]:
    """Return an email that an operator alert names, with those alerts; 404 for any other email.

    Support works for the platform, not for a clinic: it may read what an alert points at, and
    nothing else of a client file.
    """
    alerts = list(
        db.session.execute(
            sa.select(OperatorAlert).where(OperatorAlert.email_id == email_id).order_by(OperatorAlert.id)
        ).scalars()
    )
    email = db.session.get(Email, email_id) if alerts else None
    if email is None:
        abort(404)
    return email, alerts


def _rows(*where: sa.ColumnElement[bool], limit: int, newest_first: bool = False) -> list[AlertRow]:
    order = (OperatorAlert.id.desc(),) if newest_first else (OperatorAlert.id,)
    rows = db.session.execute(
        sa.select(OperatorAlert, Email, Client, Clinic)
        .outerjoin(Email, Email.id == OperatorAlert.email_id)
        .outerjoin(Client, Client.id == Email.client_id)
        .outerjoin(Clinic, Clinic.id == Email.clinic_id)
        .where(*where)
        .order_by(*order)
        .limit(limit)
    ).all()
    return [AlertRow(alert, email, client, clinic) for alert, email, client, clinic in rows]
