"""Operator alerts grouped into incidents: one per cause and clinic (or provider), opened once,
counted, listing its emails, closed by itself when the cause clears, shown to support and /metrics."""

from __future__ import annotations

import logging
from datetime import timedelta

import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import login
from webapp.extensions import db
from webapp.models import AuditEntry, Email, Incident, OperatorAlert, utcnow
from webapp.providers import get_provider
from webapp.providers.base import ProviderEvent
from webapp.services import alerts, maintenance, sending
from webapp.services.events import apply_events


def emails_of(client, count: int, **state) -> list[Email]:
    made = []
    for _ in range(count):
        email = sending.queue_email(client, kind="receipt", subject="Receipt", body="Thanks", sent_by=None)
        for name, value in state.items():
            setattr(email, name, value)
        made.append(email)
    db.session.commit()
    return made


def support(app):
    client = app.test_client()
    login(client, "support@platform.example")
    return client


def open_incidents() -> list[Incident]:
    return list(
        db.session.execute(
            sa.select(Incident).where(Incident.closed_at.is_(None)).order_by(Incident.id)
        ).scalars()
    )


def metrics(client) -> dict[tuple[str, tuple], float]:
    found = {}
    for family in text_string_to_metric_families(client.get("/metrics").get_data(as_text=True)):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_an_outage_raises_one_incident_for_every_email_in_doubt_that_closes_by_itself(app, world, caplog):
    long_ago = utcnow() - timedelta(minutes=11)
    doubtful = emails_of(world.client_a, 30, send_state="in_doubt", in_doubt_since=long_ago)
    doubtful += emails_of(world.client_b, 15, send_state="in_doubt", in_doubt_since=long_ago)
    for email in doubtful:
        email.status_changed_at = email.status_received_at = long_ago
    db.session.commit()
    with caplog.at_level(logging.WARNING, logger="webapp.services.alerts"):
        assert maintenance.flag_stuck_emails(utcnow()) == 45
    # One alert per email, so each email's own page still names it; one incident for them all.
    assert db.session.execute(sa.select(sa.func.count(OperatorAlert.id))).scalar() == 45
    [incident] = open_incidents()
    assert (incident.kind, incident.scope, incident.clinic_id) == ("email_in_doubt", "provider:sandbox", None)
    assert sum("operator incident opened" in record.message for record in caplog.records) == 1

    client = support(app)
    page = client.get("/support/operations").get_data(as_text=True)
    assert "Open incidents (1)" in page and "Open alerts (45)" in page
    assert "45 of them in the incidents above" in page and "and 35 more" in page
    queue = client.get("/support/removal-requests").get_data(as_text=True)
    assert "45 open alerts about 45 emails" in queue and f"/support/incidents/{incident.id}" in queue
    listed = client.get(f"/support/incidents/{incident.id}").get_data(as_text=True)
    assert all(email.reference in listed for email in doubtful)
    for email in (doubtful[0], doubtful[-1]):
        assert client.get(f"/support/emails/{email.id}").status_code == 200
    found = metrics(client)
    assert found[("clinicmail_open_incidents", (("kind", "email_in_doubt"),))] == 1
    assert (
        found[
            ("clinicmail_open_incident_alerts", (("kind", "email_in_doubt"), ("scope", "provider:sandbox")))
        ]
        == 45
    )

    # The provider comes back: every email settles, and the incident closes with its last alert.
    for email in doubtful:
        email.send_state = "accepted"
        apply_events(
            email, [ProviderEvent("delivered", utcnow(), app_message_id=email.app_message_id)], "poll"
        )
    db.session.commit()
    maintenance.sweep()
    db.session.refresh(incident)
    assert incident.closed_at is not None and open_incidents() == []
    assert "Open incidents (0)" in client.get("/support/operations").get_data(as_text=True)
    # A later outage is a new incident.
    alerts.alert_operators("email_in_doubt", "again", emails_of(world.client_a, 1)[0])
    db.session.commit()
    assert [item.id for item in open_incidents()] != [incident.id] and len(open_incidents()) == 1


def test_stuck_emails_make_one_incident_per_clinic(app, world):
    long_ago = utcnow() - timedelta(minutes=11)
    for client, count in ((world.client_a, 3), (world.client_b, 2)):
        for email in emails_of(client, count, status="processed", send_state="accepted"):
            email.status_changed_at = email.status_received_at = long_ago
    db.session.commit()
    assert maintenance.flag_stuck_emails(utcnow()) == 5
    incidents = open_incidents()
    assert [(item.kind, item.scope) for item in incidents] == [
        ("email_stuck", f"clinic:{world.clinic_a.id}"),
        ("email_stuck", f"clinic:{world.clinic_b.id}"),
    ]
    page = support(app).get("/support/removal-requests").get_data(as_text=True)
    assert "Emails stuck in Sending or Processed</strong> · Clinic A · 3 open alerts about 3 emails" in page
    assert "Clinic B · 2 open alerts about 2 emails" in page


def test_a_refused_key_incident_closes_when_a_send_is_accepted_again(app, world):
    provider = get_provider(app.config)
    good_key = provider._client.headers["Authorization"]
    provider._client.headers["Authorization"] = "Bearer sandbox-forbidden"
    first, second = emails_of(world.client_a, 2)
    try:
        assert sending.deliver(first.id, provider) == "queued"
        assert sending.deliver(second.id, provider) == "queued"
    finally:
        provider._client.headers["Authorization"] = good_key
    [incident] = open_incidents()
    assert incident.kind == "provider_auth"
    assert db.session.execute(sa.select(sa.func.count(OperatorAlert.id))).scalar() == 1  # open: not again
    db.session.execute(sa.update(Email).values(next_attempt_at=None))
    db.session.commit()
    assert sending.deliver(first.id, provider) == "accepted"
    db.session.refresh(incident)
    assert incident.closed_at is not None
    assert db.session.execute(sa.select(OperatorAlert.resolved_at)).scalar_one() is not None


def test_alerts_of_any_kind_are_grouped_and_cleared_by_their_raiser(app, world):
    """Kinds this module has never heard of group like the others: by clinic when they name an
    email, by provider when they do not."""
    alerts.alert_operators("clock_skew", "The provider's clock is 2 hours ahead.")
    alerts.alert_operators("clock_skew", "The provider's clock is 2 hours ahead.")  # still open: once
    a1, a2 = emails_of(world.client_a, 2)
    (b1,) = emails_of(world.client_b, 1)
    for email in (a1, a2, b1):
        alerts.alert_operators("event_set_aside", f"An event of {email.reference} was set aside.", email)
    db.session.commit()
    assert [(item.kind, item.scope) for item in open_incidents()] == [
        ("clock_skew", "provider:sandbox"),
        ("event_set_aside", f"clinic:{world.clinic_a.id}"),
        ("event_set_aside", f"clinic:{world.clinic_b.id}"),
    ]
    assert alerts.clear("clock_skew") == 1
    db.session.commit()
    assert [item.kind for item in open_incidents()] == ["event_set_aside", "event_set_aside"]
    assert alerts.clear("clock_skew") == 0  # nothing open: nothing to do


def test_an_alert_left_outside_an_open_incident_is_grouped_by_the_sweep(app, world):
    (email,) = emails_of(world.client_a, 1)
    closed = Incident(kind="email_stuck", scope=f"clinic:{world.clinic_a.id}", closed_at=utcnow())
    db.session.add(closed)
    db.session.flush()
    # Raised just as its incident closed, and one stored before there were incidents.
    db.session.add(
        OperatorAlert(kind="email_stuck", message="late", email_id=email.id, incident_id=closed.id)
    )
    db.session.add(OperatorAlert(kind="provider_auth", message="older"))
    db.session.commit()
    assert maintenance.sweep()["incidents"] == 2
    assert [(item.kind, item.scope) for item in open_incidents()] == [
        ("email_stuck", f"clinic:{world.clinic_a.id}"),
        ("provider_auth", "provider:sandbox"),
    ]
    assert (
        db.session.execute(
            sa.select(sa.func.count(OperatorAlert.id)).where(OperatorAlert.incident_id == closed.id)
        ).scalar()
        == 0
    )


def test_support_deals_with_a_whole_incident_at_once(app, world):
    long_ago = utcnow() - timedelta(minutes=11)
    for email in emails_of(world.client_a, 4, status="processed", send_state="accepted"):
        email.status_changed_at = email.status_received_at = long_ago
    db.session.commit()
    maintenance.flag_stuck_emails(utcnow())
    [incident] = open_incidents()
    client = support(app)
    assert client.post(f"/support/incidents/{incident.id}/resolve").status_code == 303
    db.session.refresh(incident)
    assert incident.closed_at is not None
    assert (
        db.session.execute(
            sa.select(sa.func.count(OperatorAlert.id)).where(OperatorAlert.resolved_at.is_(None))
        ).scalar()
        == 0
    )
    assert db.session.execute(sa.select(AuditEntry.action)).scalars().all()[-1] == "incident.resolve"
    assert "No open incidents." in client.get("/support/removal-requests").get_data(as_text=True)
    assert client.post("/support/incidents/999999/resolve").status_code == 404
    assert client.get("/support/incidents/999999").status_code == 404
    clinician = app.test_client()
    login(clinician, "clinician@a.example")
    assert clinician.get(f"/support/incidents/{incident.id}").status_code in (403, 404)
    assert clinician.post(f"/support/incidents/{incident.id}/resolve").status_code in (403, 404)
