"""Per-client export: the CSV and the printed page hold the right emails with their timelines and
reasons, say the clinic, time zone and when they were made, and each export is audited."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from tests.helpers import login
from webapp.extensions import db
from webapp.models import AuditEntry, Email, EmailEvent

DAY_ONE = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)


def add_email(world, created_at, subject, status, events, sent_by=None) -> Email:
    email = Email(
        clinic_id=world.clinic_a.id,
        client_id=world.client_a.id,
        to_address=world.client_a.email,
        subject=subject,
        body="B",
        kind="appointment_reminder",
        provider="sandbox",
        status=status,
        created_at=created_at,
        status_changed_at=created_at,
        sent_by_id=sent_by,
    )
    db.session.add(email)
    db.session.flush()
    for seconds, kind, reason in events:
        db.session.add(
            EmailEvent(
                email_id=email.id,
                occurred_at=created_at + timedelta(seconds=seconds),
                kind=kind,
                reason=reason,
                source="webhook",
                raw={"response": "250 OK"} if kind == "delivered" else None,
                dedupe_key=uuid.uuid4().hex,
            )
        )
    return email


@pytest.fixture
def history(app, world):
    add_email(
        world, DAY_ONE - timedelta(hours=9, minutes=31), "Before the range", "delivered", []
    )  # 28 Feb 23:59
    add_email(
        world,
        DAY_ONE,
        "Appointment reminder",
        "delivered",
        [(1, "processed", None), (3, "delivered", None)],
        sent_by=world.users["clinician"].id,
    )
    add_email(
        world,
        DAY_ONE + timedelta(days=2),
        '=HYPERLINK("http://evil")',
        "failed",
        [(1, "processed", None), (2, "bounce", "550 5.1.1 The email account does not exist")],
    )
    add_email(world, datetime(2026, 3, 4, 0, 0, tzinfo=UTC), "After the range", "delivered", [])
    db.session.add(
        Email(
            clinic_id=world.clinic_b.id,
            client_id=world.client_b.id,
            to_address="b@example.com",
            subject="Other clinic",
            body="B",
            kind="receipt",
            provider="sandbox",
            created_at=DAY_ONE,
        )
    )
    db.session.commit()
    return world


def csv_rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def test_the_csv_holds_the_days_asked_with_timelines_and_reasons(history, client):
    login(client, "clinician@a.example")
    response = client.get(f"/clients/{history.client_a.id}/export/csv?from=2026-03-01&to=2026-03-03")
    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    assert "attachment;" in response.headers["Content-Disposition"]
    assert "2026-03-01-to-2026-03-03.csv" in response.headers["Content-Disposition"]
    rows = csv_rows(response.get_data(as_text=True))
    facts = {row[0]: row[1] for row in rows[:6]}
    assert facts["Clinic"] == "Clinic A"
    assert facts["Time zone"].startswith("UTC")
    assert facts["Period"].startswith("2026-03-01 to 2026-03-03")
    assert facts["Made at"].endswith("UTC") and facts["Emails"] == "2"
    header = rows[7]
    assert header[:5] == ["Created", "Subject", "Kind", "To", "Status"]
    body = [dict(zip(header, row, strict=True)) for row in rows[8:]]
    assert [row["Subject"] for row in body] == ["Appointment reminder", '\'=HYPERLINK("http://evil")']
    first, second = body
    assert first["Created"] == "2026-03-01 09:30:00 UTC" and first["Status"] == "Delivered"
    assert first["Sent by"] == "Cleo A" and first["Kind"] == "Appointment reminder"
    assert first["Timeline"] == (
        "2026-03-01 09:30:01 UTC Accepted by the email provider; "
        "2026-03-01 09:30:03 UTC Delivered to the receiving server (250 OK)"
    )
    assert second["Status"] == "Failed"
    assert second["Why it failed"].startswith("the address does not exist (check it with the client")
    assert "Bounced (the address does not exist" in second["Timeline"]


def test_the_printable_page_says_clinic_time_zone_and_when_it_was_made(history, client):
    login(client, "clinician@a.example")
    response = client.get(f"/clients/{history.client_a.id}/export/print?from=2026-03-01&to=2026-03-03")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert "Clinic A" in page and "every date and time on this page is UTC" in page
    assert "<dt>Made</dt>" in page
    assert "Sun 1 Mar 2026 at 09:30 UTC · Appointment reminder" in page
    assert "2026-03-01 09:30:03 UTC Delivered to the receiving server (250 OK)" in page
    assert "Status now: <strong>Failed</strong>: the address does not exist" in page
    assert "Before the range" not in page and "After the range" not in page and "Other clinic" not in page
    assert "css/overviews.css" in page and " style=" not in page


def test_each_export_is_audited(history, client):
    login(client, "owner@a.example")
    client.get(f"/clients/{history.client_a.id}/export/csv?from=2026-03-01&to=2026-03-03")
    client.get(f"/clients/{history.client_a.id}/export/print?from=2026-03-02&to=2026-03-03")
    entries = list(
        db.session.execute(
            sa.select(AuditEntry).where(AuditEntry.action == "email_log.export").order_by(AuditEntry.id)
        ).scalars()
    )
    assert [(e.actor_id, e.clinic_id, e.subject_id) for e in entries] == [
        (history.users["owner"].id, history.clinic_a.id, history.client_a.id)
    ] * 2
    assert entries[0].detail == "csv: 2026-03-01 to 2026-03-03, 2 emails"
    assert entries[1].detail == "printed page: 2026-03-02 to 2026-03-03, 1 emails"
    page = client.get("/clinic/audit").get_data(as_text=True)
    assert "Exported a client&#39;s email log" in page or "Exported a client's email log" in page


@pytest.mark.parametrize(
    "query",
    [
        "from=2026-03-05&to=2026-03-01",
        "from=yesterday&to=2026-03-01",
        "from=2020-01-01&to=2026-03-01",
        "from=2026-03-01&to=2999-01-01",
    ],
)
def test_a_bad_range_shows_the_form_again_and_exports_nothing(history, client, query):
    login(client, "clinician@a.example")
    response = client.get(f"/clients/{history.client_a.id}/export/csv?{query}")
    assert response.status_code == 400
    assert 'role="alert"' in response.get_data(as_text=True)
    assert not db.session.execute(
        sa.select(AuditEntry).where(AuditEntry.action == "email_log.export")
    ).first()


def test_another_clinics_client_cannot_be_exported(history, client):
    login(client, "clinician@b.example")
    for path in ("export", "export/csv", "export/print"):
        assert client.get(f"/clients/{history.client_a.id}/{path}").status_code == 404


def test_support_cannot_export(history, client):
    login(client, "support@platform.example")
    assert client.get(f"/clients/{history.client_a.id}/export/csv").status_code == 404


def test_the_client_file_links_to_the_export_form(history, client):
    login(client, "clinician@a.example")
    page = client.get(f"/clients/{history.client_a.id}").get_data(as_text=True)
    assert f"/clients/{history.client_a.id}/export" in page
    form = client.get(f"/clients/{history.client_a.id}/export").get_data(as_text=True)
    assert 'name="from"' in form and "Download CSV" in form and "Printable page" in form


def test_an_export_reads_days_and_times_in_the_clinics_time_zone(history, client):
    history.clinic_a.timezone = "America/New_York"  # UTC-5 in March
    db.session.commit()
    login(client, "clinician@a.example")
    page = client.get(f"/clients/{history.client_a.id}/export/print?from=2026-03-01&to=2026-03-03")
    text = page.get_data(as_text=True)
    assert "every date and time on this page is America/New_York" in text
    assert "Sun 1 Mar 2026 at 04:30 EST · Appointment reminder" in text  # 09:30 UTC
    assert "2026-03-01 04:30:03 EST Delivered to the receiving server (250 OK)" in text
    # 28 Feb 23:59 UTC is 28 Feb 18:59 in New York: before the range either way.
    assert "Before the range" not in text
    rows = list(
        csv.reader(
            io.StringIO(
                client.get(
                    f"/clients/{history.client_a.id}/export/csv?from=2026-03-01&to=2026-03-03"
                ).get_data(as_text=True)
            )
        )
    )
    assert ["Time zone", "America/New_York: every date and time below is America/New_York"] in rows
