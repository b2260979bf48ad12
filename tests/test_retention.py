"""Retention: the purge removes what is older than RETENTION_DAYS, nothing younger, in batches
that can stop anywhere and resume; the audit trail is kept unless its own setting says otherwise."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa

from config import ConfigError
from webapp.extensions import db
from webapp.models import (
    AuditEntry,
    Email,
    EmailContent,
    EmailEvent,
    OperatorAlert,
    PendingEvent,
    RemovalRequest,
    SpamListEntry,
    WebhookBatch,
    utcnow,
)
from webapp.services import audit, retention

# The database engine shapes what this module tests: CI runs it on PostgreSQL and on SQLite.
pytestmark = pytest.mark.engine

DAY = timedelta(days=1)


def make_email(world, created_at: datetime, events: int = 2, **fields) -> Email:
    email = Email(
        clinic_id=world.clinic_a.id,
        client_id=world.client_a.id,
        to_address=world.client_a.email,
        subject="Appointment reminder",
        body="See you soon",
        kind="appointment_reminder",
        provider="sandbox",
        status="delivered",
        created_at=created_at,
        status_changed_at=created_at,
        **fields,
    )
    db.session.add(email)
    db.session.flush()
    for number, kind in enumerate(["processed", "delivered", "open"][:events]):
        db.session.add(
            EmailEvent(
                email_id=email.id,
                occurred_at=created_at + timedelta(seconds=number),
                kind=kind,
                source="webhook",
                raw={"event": kind, "sg_event_id": uuid.uuid4().hex},
                dedupe_key=uuid.uuid4().hex,
                created_at=created_at,
            )
        )
    db.session.commit()
    return email


def make_case(received_at: datetime, status: str) -> RemovalRequest:
    case = RemovalRequest(
        received_at=received_at,
        from_address="jane@example.com",
        subject="Please take me off",
        body_excerpt="I reported it by mistake",
        fingerprint=uuid.uuid4().hex,
        raw_mail=b"From: jane@example.com\r\n\r\nI reported it by mistake\r\n",
        verdict="verified",
        status=status,
        decision_note="checked" if status != "pending" else "",
        decided_at=received_at + DAY if status != "pending" else None,
    )
    db.session.add(case)
    db.session.commit()
    return case


def count(model) -> int:
    return db.session.execute(sa.select(sa.func.count()).select_from(model)).scalar_one()


def test_only_records_older_than_the_setting_go(app, world):
    now = utcnow()
    edge = now - 400 * DAY
    old = make_email(world, edge - timedelta(seconds=1))
    on_the_edge = make_email(world, edge)
    young = make_email(world, edge + timedelta(seconds=1))
    db.session.add_all(
        [
            WebhookBatch(provider="sendgrid", body=b"[]", received_at=edge - DAY, applied_at=edge - DAY),
            WebhookBatch(provider="sendgrid", body=b"[]", received_at=edge + DAY, applied_at=edge + DAY),
            PendingEvent(app_message_id="x", dedupe_key="old", payload={}, received_at=edge - DAY),
            PendingEvent(app_message_id="y", dedupe_key="young", payload={}, received_at=edge + DAY),
        ]
    )
    db.session.commit()
    old_decided = make_case(edge - DAY, "rejected")
    old_pending = make_case(edge - DAY, "pending")
    young_decided = make_case(edge + DAY, "approved")
    old_id = old.id

    report = retention.purge(now)

    assert report.finished
    assert report.counts["emails"] == 1 and report.counts["events"] == 2
    remaining = set(db.session.execute(sa.select(Email.id)).scalars())
    assert remaining == {on_the_edge.id, young.id}
    assert not db.session.execute(sa.select(EmailEvent).where(EmailEvent.email_id == old_id)).first()
    assert count(EmailEvent) == 4
    assert [b.received_at for b in db.session.execute(sa.select(WebhookBatch)).scalars()] == [edge + DAY]
    assert list(db.session.execute(sa.select(PendingEvent.dedupe_key)).scalars()) == ["young"]
    db.session.expire_all()
    # The old decided case stays on record, decision and all, without its mail.
    assert old_decided.raw_mail is None and old_decided.body_excerpt == ""
    assert old_decided.status == "rejected" and old_decided.decision_note == "checked"
    assert old_decided.subject == "Please take me off" and old_decided.from_address == "jane@example.com"
    # An undecided case keeps its evidence, however old; a young one is untouched.
    assert old_pending.raw_mail and old_pending.body_excerpt
    assert young_decided.raw_mail and young_decided.body_excerpt


def test_the_copy_as_sent_goes_with_its_email_and_no_sooner(app, world):
    now = utcnow()
    old = make_email(world, now - 401 * DAY)
    young = make_email(world, now - 399 * DAY)
    for email in (old, young):
        db.session.add(
            EmailContent(
                email_id=email.id,
                body_html="<p>See you soon</p>",
                reply_to="front@clinic-a.example",
                calendar_ics="BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n",
            )
        )
    db.session.commit()
    old_id, young_id = old.id, young.id

    assert retention.purge(now).finished

    kept = set(db.session.execute(sa.select(EmailContent.email_id)).scalars())
    assert kept == {young_id}
    assert db.session.get(Email, old_id) is None and db.session.get(Email, young_id) is not None


def test_the_setting_moves_the_boundary(make_app):
    app = make_app(RETENTION_DAYS=60)
    with app.app_context():
        assert retention.cutoff(utcnow()) < utcnow() - timedelta(days=59)
        assert retention.cutoff(utcnow()) > utcnow() - timedelta(days=61)


def test_what_points_at_a_purged_email_stays_unhooked(app, world):
    now = utcnow()
    old = make_email(world, now - 500 * DAY)
    resend = make_email(world, now - 20 * DAY, resend_of_id=old.id)
    db.session.add_all(
        [
            SpamListEntry(
                address="jane@example.com", reported_at=now - 500 * DAY, email_id=old.id, source="webhook"
            ),
            OperatorAlert(
                kind="email_stuck", message="old and done", email_id=old.id, resolved_at=now - 499 * DAY
            ),
            OperatorAlert(kind="email_stuck", message="still open", email_id=old.id),
        ]
    )
    db.session.commit()

    retention.purge(now)

    db.session.expire_all()
    assert resend.resend_of_id is None
    entry = db.session.execute(sa.select(SpamListEntry)).scalar_one()
    assert entry.email_id is None  # the spam list is the provider's: the entry stays
    alert = db.session.execute(sa.select(OperatorAlert)).scalar_one()
    assert alert.message == "still open" and alert.email_id is None


def test_a_purge_stopped_between_batches_leaves_whole_emails_and_resumes(app, world):
    now = utcnow()
    old = [make_email(world, now - (401 + n) * DAY, events=3) for n in range(7)]
    young = make_email(world, now - 10 * DAY, events=3)
    old_ids = {email.id for email in old}

    first = retention.purge(now, batch_size=3, max_batches=1)

    assert not first.finished and first.counts["emails"] == 3
    left = set(db.session.execute(sa.select(Email.id)).scalars())
    assert len(left & old_ids) == 4 and young.id in left
    # Every email still there has all its events: a batch takes an email and its events together.
    per_email = dict(
        db.session.execute(
            sa.select(EmailEvent.email_id, sa.func.count()).group_by(EmailEvent.email_id)
        ).all()
    )
    assert per_email == dict.fromkeys(left, 3)

    second = retention.purge(now, batch_size=3, max_batches=1)
    assert not second.finished and second.counts["emails"] == 3

    rest = retention.purge(now, batch_size=3)
    assert rest.finished and rest.counts["emails"] == 1
    assert set(db.session.execute(sa.select(Email.id)).scalars()) == {young.id}
    assert count(EmailEvent) == 3
    # Running it again finds nothing more.
    assert not any(retention.purge(now).counts.values())


def test_a_batch_that_fails_midway_changes_nothing(app, world, monkeypatch):
    now = utcnow()
    old = make_email(world, now - 401 * DAY)
    real_delete = sa.delete

    def failing_delete(model):
        if model is Email:
            raise sa.exc.OperationalError("DELETE", {}, Exception("lock timeout"))
        return real_delete(model)

    monkeypatch.setattr(retention.sa, "delete", failing_delete)
    report = retention.purge(now)
    monkeypatch.setattr(retention.sa, "delete", real_delete)

    assert not report.finished
    assert db.session.get(Email, old.id) is not None
    assert count(EmailEvent) == 2  # its events were deleted in the same transaction: rolled back
    assert retention.purge(now).finished
    assert count(Email) == 0


def test_the_audit_trail_is_kept_by_default(app, world):
    audit.record("email.send", world.users["clinician"], clinic_id=world.clinic_a.id)
    db.session.commit()
    before = count(AuditEntry)
    retention.purge(utcnow() + 3000 * DAY)
    assert count(AuditEntry) == before
    assert app.config["AUDIT_RETENTION_DAYS"] == 0


def test_the_owner_can_purge_old_audit_lines_and_the_trail_stays_append_only(app, world):
    # Audit lines are append-only, so the "old" line is written while the clock says so.
    from webapp import clock

    long_ago = utcnow() - 3000 * DAY
    clock.use(lambda: long_ago.timestamp())
    try:
        audit.record("email.send", world.users["clinician"], clinic_id=world.clinic_a.id, detail="old")
        db.session.commit()
    finally:
        clock.use(None)
    audit.record("email.send", world.users["clinician"], clinic_id=world.clinic_a.id, detail="new")
    db.session.commit()

    engine = sa.create_engine(app.config["MIGRATION_DATABASE_URL"], poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            assert retention.purge_audit(connection, utcnow() - 2000 * DAY, batch_size=10) == 1
    finally:
        engine.dispose()

    assert "old" not in set(db.session.execute(sa.select(AuditEntry.detail)).scalars())
    assert "new" in set(db.session.execute(sa.select(AuditEntry.detail)).scalars())
    with pytest.raises(sa.exc.DatabaseError):
        db.session.execute(sa.delete(AuditEntry))
        db.session.flush()
    db.session.rollback()


@pytest.mark.parametrize("days", ["30", "7", "-1"])
def test_a_retention_shorter_than_the_log_is_refused(days, tmp_path):
    from config import load_settings

    with pytest.raises(ConfigError, match="RETENTION_DAYS"):
        load_settings(str(tmp_path), {"RETENTION_DAYS": days})
