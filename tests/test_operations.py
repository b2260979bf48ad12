"""The operator's view and /metrics: the figures are right, and only support or a scraper's token
reads them."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import login
from webapp.extensions import db
from webapp.models import Email, EmailEvent, OperatorAlert, WebhookBatch, utcnow
from webapp.providers import get_provider
from webapp.queue import enqueue
from webapp.services import budget, operations

TOKEN = "s3cr3t-metrics-token-Xq9vB2mWz7Kd4Lp"


def metrics_of(text: str) -> dict[tuple[str, tuple], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def seed_figures(world) -> None:
    now = utcnow()
    email = Email(
        clinic_id=world.clinic_a.id,
        client_id=world.client_a.id,
        to_address="a@example.com",
        subject="S",
        body="B",
        kind="receipt",
        provider="sandbox",
    )
    db.session.add(email)
    db.session.flush()
    for minutes_ago in (1, 2, 3, 4, 20):  # four inside the five-minute window, one outside
        db.session.add(
            EmailEvent(
                email_id=email.id,
                occurred_at=now,
                kind="delivered",
                source="webhook",
                dedupe_key=uuid.uuid4().hex,
                created_at=now - timedelta(minutes=minutes_ago),
            )
        )
    db.session.add_all(
        [
            WebhookBatch(
                provider="sendgrid",
                body=b"[]",
                received_at=now - timedelta(minutes=5),
                applied_at=now - timedelta(minutes=5) + timedelta(seconds=2),
            ),
            WebhookBatch(
                provider="sendgrid",
                body=b"[]",
                received_at=now - timedelta(minutes=3),
                applied_at=now - timedelta(minutes=3) + timedelta(seconds=6),
            ),
            WebhookBatch(provider="sendgrid", body=b"[]", received_at=now - timedelta(seconds=90)),
            OperatorAlert(kind="email_stuck", message="Stuck: email 1"),
            OperatorAlert(kind="email_stuck", message="Stuck: email 2"),
            OperatorAlert(kind="bad_api_key", message="Key refused"),
            OperatorAlert(kind="email_stuck", message="done", resolved_at=now),
        ]
    )
    db.session.commit()


def test_the_snapshot_counts_what_is_there(app, world):
    seed_figures(world)
    enqueue("jobs.maintenance.sweep")
    enqueue("jobs.maintenance.sweep")
    budget.take(get_provider(app.config), budget.POLL, 2)

    snap = operations.snapshot()

    assert snap.events_per_minute == pytest.approx(4 / 5)
    assert snap.batches_applied == 2
    assert snap.lag_average_seconds == pytest.approx(4) and snap.lag_max_seconds == pytest.approx(6)
    assert snap.unapplied_batches == 1 and snap.oldest_unapplied_seconds == pytest.approx(90, abs=5)
    assert snap.queue.waiting == 2 and snap.queue.oldest_waiting_seconds is not None
    assert snap.budget_used == 2 and snap.budget_limit == app.config["ACTIVITY_REQUESTS_PER_MINUTE"]
    assert snap.alerts_by_kind == {"email_stuck": 2, "bad_api_key": 1}


def test_support_sees_the_operators_view(app, world, client):
    seed_figures(world)
    login(client, "support@platform.example")
    page = client.get("/support/operations").get_data(as_text=True)
    assert "Events applied per minute" in page and "0.8" in page
    assert "Stuck: email 1" in page and "Key refused" in page and ">done<" not in page
    assert "Open alerts (3)" in page


@pytest.mark.parametrize("who", ["clinician@a.example", "owner@a.example"])
def test_clinic_staff_cannot_open_the_operators_view_or_metrics(app, world, client, who):
    login(client, who)
    assert client.get("/support/operations").status_code == 404
    assert client.get("/metrics").status_code == 404


def test_metrics_are_closed_to_the_public(make_app):
    app = make_app(METRICS_TOKEN=TOKEN)
    client = app.test_client()
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/metrics", headers={"Authorization": f"Basic {TOKEN}"}).status_code == 401
    response = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=")


def test_without_a_token_setting_no_token_opens_metrics(make_app):
    client = make_app().test_client()
    assert client.get("/metrics", headers={"Authorization": "Bearer "}).status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer"}).status_code == 401


def test_metrics_for_a_support_user_carry_the_figures(app, world, client):
    seed_figures(world)
    login(client, "support@platform.example")
    response = client.get("/metrics")
    assert response.status_code == 200
    found = metrics_of(response.get_data(as_text=True))
    assert found[("clinicmail_events_applied_per_minute", ())] == pytest.approx(0.8)
    assert found[("clinicmail_webhook_lag_seconds_max", ())] == pytest.approx(6)
    assert found[("clinicmail_webhook_unapplied_batches", ())] == 1
    assert found[("clinicmail_open_alerts", (("kind", "email_stuck"),))] == 2
    assert found[("clinicmail_open_alerts", (("kind", "bad_api_key"),))] == 1
    assert found[("clinicmail_queue_jobs", (("state", "waiting"),))] == 0
    assert found[("clinicmail_redis_up", ())] == 1


def test_healthz_stays_cheap_and_public(app, client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.get_json()["status"] == "ok"


def test_a_weak_metrics_token_is_refused(tmp_path):
    from config import ConfigError, load_settings

    with pytest.raises(ConfigError, match="METRICS_TOKEN"):
        load_settings(str(tmp_path), {"METRICS_TOKEN": "changeme"})
