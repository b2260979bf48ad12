"""Periodic sweeps: stuck emails, 72-hour deferrals, late send records, the spam-list copy."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from webapp.extensions import db
from webapp.models import Email, OperatorAlert, PendingEvent, SpamListEntry, utcnow
from webapp.providers.base import ProviderEvent
from webapp.services import maintenance, sending
from webapp.services.events import apply_events, keep_for_later


def queued(world) -> Email:
    return sending.queue_email(world.client_a, kind="receipt", subject="R", body="B", sent_by=None)


def test_an_email_stuck_for_ten_minutes_alerts_support_once(app, world):
    email = queued(world)
    email.status_received_at = email.status_changed_at = utcnow() - timedelta(minutes=11)
    db.session.commit()
    assert maintenance.flag_stuck_emails(utcnow()) == 1
    assert maintenance.flag_stuck_emails(utcnow()) == 0
    alert = db.session.execute(sa.select(OperatorAlert)).scalar_one()
    assert alert.kind == "email_stuck" and alert.email_id == email.id


def test_an_email_not_yet_stuck_raises_no_alert(app, world):
    queued(world)
    assert maintenance.flag_stuck_emails(utcnow()) == 0


def test_a_deferral_older_than_72_hours_becomes_failed(app, world):
    email = queued(world)
    first = utcnow() - timedelta(hours=73)
    apply_events(
        email, [ProviderEvent("deferred", first, app_message_id=email.app_message_id, attempt=1)], "poll"
    )
    db.session.commit()
    assert maintenance.expire_old_deferrals(utcnow()) == 1
    db.session.refresh(email)
    assert email.status == "failed"
    assert maintenance.expire_old_deferrals(utcnow()) == 0


def test_events_that_came_before_their_send_record_are_applied_later(app, world):
    email = queued(world)
    late = ProviderEvent("delivered", utcnow(), app_message_id=email.app_message_id)
    keep_for_later([late])
    db.session.commit()
    assert maintenance.sweep()["adopted"] == 1
    db.session.refresh(email)
    assert email.status == "delivered"
    assert db.session.execute(sa.select(sa.func.count(PendingEvent.id))).scalar() == 0


def test_kept_events_expire_after_a_week(app, world):
    keep_for_later([ProviderEvent("delivered", utcnow(), app_message_id="never-known")])
    db.session.commit()
    maintenance.sweep(utcnow() + timedelta(days=8))
    assert db.session.execute(sa.select(sa.func.count(PendingEvent.id))).scalar() == 0


def test_the_spam_list_copy_follows_the_provider(app, world):
    # The sandbox's list holds its "dropped" scenario addresses once it has seen them.
    from webapp.providers import get_provider

    provider = get_provider(app.config)
    provider.send(
        sending.OutgoingMessage(
            "id-1", "marco+dropped@example.com", "Marco", "a@b.example", "A", "S", "B", "receipt"
        )
    )
    assert maintenance.sync_spam_list() >= 1
    addresses = set(db.session.execute(sa.select(SpamListEntry.address)).scalars())
    assert "marco+dropped@example.com" in addresses


def test_an_address_taken_off_the_providers_list_is_taken_off_ours(app, world):
    from webapp.services.events import add_to_spam_list

    add_to_spam_list("gone-from-provider@example.com", utcnow(), None, "webhook")
    db.session.commit()
    maintenance.sync_spam_list()
    addresses = set(db.session.execute(sa.select(SpamListEntry.address)).scalars())
    assert "gone-from-provider@example.com" not in addresses


def test_a_stuck_alert_resolves_itself_once_the_email_moves_on(app, world):
    email = queued(world)
    email.status_received_at = email.status_changed_at = utcnow() - timedelta(minutes=11)
    db.session.commit()
    maintenance.flag_stuck_emails(utcnow())
    apply_events(
        email, [ProviderEvent("delivered", utcnow(), app_message_id=email.app_message_id)], "webhook"
    )
    db.session.commit()
    maintenance.flag_stuck_emails(utcnow())
    assert db.session.execute(sa.select(OperatorAlert.resolved_at)).scalar_one() is not None


def test_support_marks_an_alert_as_dealt_with(app, world, client):
    from tests.helpers import login

    sending.alert_operators("provider_auth", "The API key was refused.")
    db.session.commit()
    login(client, "support@platform.example")
    assert "The API key was refused." in client.get("/support/removal-requests").get_data(as_text=True)
    alert_id = db.session.execute(sa.select(OperatorAlert.id)).scalar_one()
    assert client.post(f"/support/alerts/{alert_id}/resolve").status_code == 303
    db.session.expire_all()
    assert db.session.get(OperatorAlert, alert_id).resolved_at is not None
    assert "The API key was refused." not in client.get("/support/removal-requests").get_data(as_text=True)


@pytest.mark.parametrize(
    ("wire_format", "records"), [("sendgrid", "Email Activity add-on"), ("postmark", "Messages API")]
)
def test_an_email_in_doubt_for_ten_minutes_raises_one_alert_that_says_so(app, world, wire_format, records):
    email = queued(world)
    email.send_state = "in_doubt"
    email.in_doubt_since = email.status_received_at = email.status_changed_at = utcnow() - timedelta(
        minutes=11
    )
    email.send_error = "no answer from SendGrid (ReadTimeout: timed out)"
    killed = queued(world)
    killed.send_state = "claimed"  # claimed, and its worker killed again and again since
    killed.send_claimed_at = killed.status_received_at = killed.status_changed_at = utcnow() - timedelta(
        minutes=11
    )
    db.session.commit()
    assert maintenance.flag_stuck_emails(utcnow()) == 2
    assert maintenance.flag_stuck_emails(utcnow()) == 0
    alerts = db.session.execute(sa.select(OperatorAlert).order_by(OperatorAlert.email_id)).scalars().all()
    assert [(alert.kind, alert.email_id) for alert in alerts] == [
        ("email_in_doubt", email.id),
        ("email_in_doubt", killed.id),
    ]
    assert "cannot tell whether the email provider received it" in alerts[0].message
    assert records in alerts[0].message  # where this provider keeps the records that settle it
    apply_events(
        email, [ProviderEvent("delivered", utcnow(), app_message_id=email.app_message_id)], "webhook"
    )
    db.session.commit()
    maintenance.flag_stuck_emails(utcnow())
    db.session.refresh(alerts[0])
    assert alerts[0].resolved_at is not None


def test_one_failing_sweep_step_does_not_stop_the_others(app, world, monkeypatch):
    email = queued(world)
    email.status_received_at = email.status_changed_at = utcnow() - timedelta(minutes=11)
    db.session.commit()

    def broken(now):
        raise RuntimeError("database hiccup")

    monkeypatch.setattr(sending, "recover_abandoned_sends", broken)
    done = maintenance.sweep()
    assert done["abandoned"] == 0 and done["stuck"] == 1
