"""The audit trail: append-only in the database itself (SQLite and PostgreSQL), exactly one row per
audited action, and shown to the clinic's owners only."""

from __future__ import annotations

from collections import Counter

import pytest
import sqlalchemy as sa

from tests.helpers import PASSWORD, email_with_history, login, removal_case
from webapp.extensions import db
from webapp.models import AuditEntry, SpamListEntry, utcnow
from webapp.services import sending

# Every page rendered here is checked for CSP breakers; each request starts with an empty `g` (conftest.py).
pytestmark = pytest.mark.usefixtures("separate_requests", "html_guard")


def actions() -> Counter[str]:
    db.session.expire_all()
    return Counter(db.session.execute(sa.select(AuditEntry.action)).scalars())


class Trail:
    """Assert what one step added to the audit trail."""

    def __init__(self) -> None:
        self.seen = actions()

    def added(self) -> Counter[str]:
        now = actions()
        new = now - self.seen
        self.seen = now
        return new


# The app's own connection: on PostgreSQL a runtime role without the right to change the trail
# (tests/test_database_roles.py), on SQLite the trigger.
REFUSED = "append-only|permission denied for table audit_entry"


def test_the_database_refuses_to_edit_or_delete_audit_entries(app, world):
    login(app.test_client(), "owner@a.example")
    assert db.session.execute(sa.select(sa.func.count(AuditEntry.id))).scalar() > 0
    for statement in ("UPDATE audit_entry SET detail = 'rewritten'", "DELETE FROM audit_entry"):
        with pytest.raises(sa.exc.DBAPIError, match=REFUSED):
            db.session.execute(sa.text(statement))
        db.session.rollback()
    entry = db.session.execute(sa.select(AuditEntry)).scalars().first()
    entry.action = "nothing.happened"
    with pytest.raises(sa.exc.DBAPIError, match=REFUSED):
        db.session.commit()
    db.session.rollback()
    db.session.delete(db.session.execute(sa.select(AuditEntry)).scalars().first())
    with pytest.raises(sa.exc.DBAPIError, match=REFUSED):
        db.session.commit()
    db.session.rollback()
    assert "nothing.happened" not in actions()


def test_every_audited_action_writes_exactly_one_row(app, world):
    trail = Trail()
    owner = app.test_client()
    login(owner, "owner@a.example")
    assert trail.added() == {"login": 1}
    assert (
        app.test_client().post("/login", data={"email": "owner@a.example", "password": "wrong"}).status_code
        == 401
    )
    assert trail.added() == {"login.failed": 1}
    assert (
        app.test_client().post("/login", data={"email": "nobody@a.example", "password": PASSWORD}).status_code
        == 401
    )
    # No account, no clinic to tell: a row of the platform's own (as much work as for an account).
    assert trail.added() == {"login.failed": 1}
    unknown = db.session.execute(sa.select(AuditEntry).order_by(AuditEntry.id.desc())).scalars().first()
    assert (unknown.clinic_id, unknown.subject_id, unknown.detail) == (None, None, "no such account")

    sent = owner.post(f"/clients/{world.client_a.id}/emails", data={"kind": "appointment_reminder"})
    assert sent.status_code == 303
    assert trail.added() == {"email.send": 1}
    failed = email_with_history(world.client_a)
    trail.added()
    resend = {"confirm": "yes", "to_address": world.client_a.email}
    assert owner.post(f"/emails/{failed.id}/resend", data=resend).status_code == 303
    assert trail.added() == {"email.resend": 1}
    corrected = {**resend, "to_address": "jane.new@example.com", "update_client": "y"}
    another_failure = email_with_history(world.client_a)
    trail.added()
    assert owner.post(f"/emails/{another_failure.id}/resend", data=corrected).status_code == 303
    assert trail.added() == {"email.resend": 1, "client.update_email": 1}

    new_user = {"name": "Nia Nurse", "email": "nia@a.example", "role": "clinician", "password": "x" * 16}
    assert owner.post("/clinic/users", data=new_user).status_code == 303
    assert trail.added() == {"user.create": 1}
    nia = (
        db.session.execute(sa.select(AuditEntry).where(AuditEntry.action == "user.create"))
        .scalars()
        .all()[-1]
    )
    assert owner.post(f"/clinic/users/{nia.subject_id}/deactivate").status_code == 303
    assert trail.added() == {"user.deactivate": 1}
    assert owner.post(f"/clinic/users/{nia.subject_id}/activate").status_code == 303
    assert trail.added() == {"user.activate": 1}

    support = app.test_client()
    login(support, "support@platform.example")
    trail.added()
    approve = removal_case(world.client_a.email.lower(), tag="approve")
    reject = removal_case(world.client_a.email.lower(), tag="reject")
    # A verified case is approvable only while its address is on the spam list.
    if sending.spam_list_entry(world.client_a.email) is None:
        listed = SpamListEntry(address=world.client_a.email.lower(), reported_at=utcnow(), source="webhook")
        db.session.add(listed)
        db.session.commit()
    assert (
        support.post(f"/support/removal-requests/{reject.id}/reject", data={"note": "no"}).status_code == 303
    )
    assert trail.added() == {"removal.rejected": 1}
    assert (
        support.post(f"/support/removal-requests/{approve.id}/approve", data={"note": "ok"}).status_code
        == 303
    )
    assert trail.added() == {"removal.approved": 1}
    assert (
        support.post(f"/support/removal-requests/{approve.id}/approve", data={"note": "again"}).status_code
        == 303
    )
    assert trail.added() == {}  # decided once

    rows = db.session.execute(sa.select(AuditEntry).order_by(AuditEntry.id)).scalars().all()
    decision = next(row for row in rows if row.action == "removal.approved")
    assert (decision.clinic_id, decision.actor_id, decision.subject_type) == (
        world.clinic_a.id,
        world.users["support"].id,
        "removal_request",
    )
    send = next(row for row in rows if row.action == "email.send")
    assert (send.clinic_id, send.actor_id, send.subject_type) == (
        world.clinic_a.id,
        world.users["owner"].id,
        "email",
    )


def test_owners_see_their_own_clinics_trail_only(app, world):
    login(app.test_client(), "clinician@b.example")
    login(app.test_client(), "clinician@a.example")
    owner = app.test_client()
    login(owner, "owner@a.example")
    page = owner.get("/clinic/audit").get_data(as_text=True)
    assert "Cleo A" in page and "Signed in" in page
    assert "Cleo B" not in page
    assert "Entries cannot be edited or deleted" in page
    clinician = app.test_client()
    login(clinician, "clinician@a.example")
    assert clinician.get("/clinic/audit").status_code == 404
