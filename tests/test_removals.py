"""Support decisions on spam-list removal requests, end to end through the inbound webhook, the
support pages, the lift job and the sandbox provider's spam-report list."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from tests.helpers import WIRE_FORMATS, login, run_jobs
from tests.inbound_mail import mail, post, sign
from webapp.extensions import db
from webapp.models import AuditEntry, OperatorAlert, RemovalRequest, SpamListEntry
from webapp.providers import get_provider, get_sandbox
from webapp.providers.base import LiftResult
from webapp.queue import get_queue
from webapp.services import maintenance, removals, sending

# Every page rendered here is checked for CSP breakers; each request starts with an empty `g` (conftest.py).
pytestmark = pytest.mark.usefixtures("separate_requests", "html_guard")

ADDRESS = "jane+dropped@clinic.example"  # the sandbox puts this address on its spam-report list


@pytest.fixture
def blocked(app, world, keys):  # noqa: F811
    """Jane's address (client A) is on the provider's spam list and ours; sends are refused."""
    app.config["DKIM_DNSFUNC"] = keys.dns
    world.client_a.email = ADDRESS
    db.session.commit()
    send(world)
    run_jobs(app)
    assert maintenance.sync_spam_list() >= 1
    assert ADDRESS in reported(app)
    with pytest.raises(sending.SendRefused):
        send(world)
    return world


def send(world):
    return sending.queue_email(
        world.client_a, kind="appointment_reminder", subject="Reminder", body="See you", sent_by=None
    )


def reported(app) -> set[str]:
    return {address for address, _ in get_provider(app.config).spam_reports()}


def file_case(app, raw: bytes, dkim_field: str = "none") -> RemovalRequest:
    """Post the mail through the inbound route and run its check job."""
    assert post(app.test_client(), raw, dkim_field).status_code == 200
    run_jobs(app)
    db.session.expire_all()
    return db.session.execute(sa.select(RemovalRequest).order_by(RemovalRequest.id.desc())).scalars().first()


def support_client(app):
    client = app.test_client()
    login(client, "support@platform.example")
    return client


def audit_rows(action: str) -> list[AuditEntry]:
    return list(db.session.execute(sa.select(AuditEntry).where(AuditEntry.action == action)).scalars())


def test_an_approved_verified_request_lifts_the_block_end_to_end(app, blocked, keys):  # noqa: F811
    case = file_case(app, sign(keys, mail(f"Jane <{ADDRESS}>")))
    assert case.verdict == "verified"
    support = support_client(app)
    page = support.get(f"/support/removal-requests/{case.id}").get_data(as_text=True)
    assert "Approvable" in page and "Clinic A (1)" in page and "On the spam list since" in page

    response = support.post(
        f"/support/removal-requests/{case.id}/approve", data={"note": "Signed by her domain"}
    )
    assert response.status_code == 303
    db.session.refresh(case)
    assert case.status == "approved" and case.lifted_at is None
    run_jobs(app)

    db.session.refresh(case)
    assert case.lifted_at is not None
    assert ADDRESS not in reported(app)
    assert (
        db.session.execute(sa.select(SpamListEntry).where(SpamListEntry.address == ADDRESS)).first() is None
    )
    email = send(blocked)  # no longer refused
    run_jobs(app)
    db.session.refresh(email)
    assert email.send_state == "accepted"
    # One decision row and one lift row, both in the clinic whose client asked, so its owners see them.
    [approved] = audit_rows("removal.approved")
    assert (approved.clinic_id, approved.actor_id) == (blocked.clinic_a.id, blocked.users["support"].id)
    assert approved.detail == f"{ADDRESS}: Signed by her domain"
    [lifted] = audit_rows("removal.lifted")
    assert lifted.clinic_id == blocked.clinic_a.id
    owner = app.test_client()
    login(owner, "owner@a.example")
    trail = owner.get("/clinic/audit").get_data(as_text=True)
    assert "Spam-list removal approved" in trail and "Spam-list block lifted" in trail


@pytest.mark.parametrize("wire_format", WIRE_FORMATS)
def test_an_unverified_request_cannot_be_approved(app, blocked, wire_format):
    case = file_case(app, mail(f"Jane <{ADDRESS}>"))  # unsigned
    assert case.verdict == "unverified"
    support = support_client(app)
    page = support.get(f"/support/removal-requests/{case.id}").get_data(as_text=True)
    assert "Sender not proven" in page and "No valid signature proves" in page
    response = support.post(
        f"/support/removal-requests/{case.id}/approve", data={"note": ""}, follow_redirects=True
    )
    assert "cannot be approved" in response.get_data(as_text=True)
    db.session.refresh(case)
    assert case.status == "pending"
    assert len(get_queue()) == 0
    assert ADDRESS in reported(app)
    assert audit_rows("removal.approved") == []


def test_a_verified_request_from_an_address_on_no_client_file_cannot_be_approved(app, blocked, keys):  # noqa: F811
    case = file_case(app, sign(keys, mail("jane+other@clinic.example")))
    assert case.verdict == "verified"
    with pytest.raises(removals.DecisionRefused, match="No client file"):
        removals.approve(case, blocked.users["support"], "")
    assert case.status == "pending"


@pytest.mark.parametrize("wire_format", WIRE_FORMATS)
def test_a_rejected_request_leaves_the_block_and_a_case_is_decided_once(app, blocked, keys, wire_format):  # noqa: F811
    case = file_case(app, sign(keys, mail(f"Jane <{ADDRESS}>")))
    support = support_client(app)
    assert (
        support.post(
            f"/support/removal-requests/{case.id}/reject", data={"note": "asked by clinic"}
        ).status_code
        == 303
    )
    db.session.refresh(case)
    assert case.status == "rejected"
    with pytest.raises(removals.DecisionRefused, match="already been decided"):
        removals.approve(case, blocked.users["support"], "")
    with pytest.raises(removals.DecisionRefused, match="already been decided"):
        removals.reject(case, blocked.users["support"], "")
    run_jobs(app)
    assert ADDRESS in reported(app)
    assert len(audit_rows("removal.rejected")) == 1
    assert audit_rows("removal.approved") == []


def test_a_failed_lift_alerts_and_is_retried_by_the_sweep(app, blocked, keys):  # noqa: F811
    import jobs.removals

    case = file_case(app, sign(keys, mail(f"Jane <{ADDRESS}>")))
    get_sandbox(app.config).fail_next(500, path_prefix="/v3/suppression/spam_reports")
    removals.approve(case, blocked.users["support"], "")
    run_jobs(app)  # the lift job fails
    db.session.refresh(case)
    assert case.lifted_at is None
    assert removals.due_lifts() == [case.id]
    assert db.session.execute(
        sa.select(OperatorAlert).where(OperatorAlert.kind == "removal_lift_failed")
    ).first()
    jobs.use_app(app)
    assert jobs.removals.sweep_lifts() == 1
    run_jobs(app)
    db.session.refresh(case)
    assert case.lifted_at is not None
    assert ADDRESS not in reported(app)
    assert removals.lift_block(case.id) is False  # idempotent
    assert len(audit_rows("removal.lifted")) == 1


def test_a_provider_that_will_not_lift_leaves_the_block_until_support_records_it(
    app,
    blocked,
    keys,
    monkeypatch,  # noqa: F811
):
    """A provider may refuse to lift a spam report through its API: nothing is lifted, support is
    told what to ask for, the sweep leaves the case alone, and recording the provider's lift ends it."""
    asked = []

    def refuse(address: str) -> LiftResult:
        asked.append(address)
        return LiftResult("provider_request_needed", "ask the provider's support to reactivate it")

    monkeypatch.setattr(get_provider(app.config), "remove_spam_report", refuse)
    case = file_case(app, sign(keys, mail(f"Jane <{ADDRESS}>")))
    removals.approve(case, blocked.users["support"], "")
    run_jobs(app)
    db.session.refresh(case)
    assert asked == [ADDRESS]
    assert (
        case.lifted_at is None and case.provider_lift_detail == "ask the provider's support to reactivate it"
    )
    assert db.session.execute(sa.select(SpamListEntry).where(SpamListEntry.address == ADDRESS)).first()
    assert removals.due_lifts() == []  # the sweep does not ask again
    assert removals.lift_block(case.id) is False and asked == [ADDRESS]
    alert = db.session.execute(
        sa.select(OperatorAlert).where(OperatorAlert.kind == "removal_provider_request_needed")
    ).scalar_one()
    assert ADDRESS in alert.message
    page = support_client(app).get(f"/support/removal-requests/{case.id}").get_data(as_text=True)
    assert "the email provider must be asked" in page
    with pytest.raises(sending.SendRefused):
        send(blocked)

    assert removals.record_provider_lift(case, blocked.users["support"]) is True
    db.session.refresh(case)
    assert case.lifted_at is not None
    assert len(audit_rows("removal.provider_lifted")) == 1 and len(audit_rows("removal.lifted")) == 1
    send(blocked)  # sending resumes
    with pytest.raises(removals.DecisionRefused):
        removals.record_provider_lift(case, blocked.users["support"])


def test_no_route_lets_anyone_file_a_case_except_the_inbound_webhook(app, world):
    """Support (or anyone) cannot ask on a client's behalf: every other POST leaves cases alone."""
    plausible = {
        "email": world.client_a.email,
        "from": world.client_a.email,
        "from_address": world.client_a.email,
        "subject": "Please remove me",
        "body": "Remove me from the spam list",
        "note": "on behalf of the client",
        "kind": "free_text",
    }
    ids = {
        "case_id": 1,
        "client_id": world.client_a.id,
        "email_id": 1,
        "user_id": world.users["clinician"].id,
    }
    for role in ("support", "owner", "clinician", None):
        for rule in app.url_map.iter_rules():
            # The sandbox demo's "play the client" button posts through the inbound webhook
            # (tests/test_removals.py::test_the_sandbox_demo_*); it does not exist beside a real provider.
            if "POST" not in rule.methods or rule.endpoint in (
                "webhooks.sendgrid_inbound",
                "clients.sandbox_removal_mail",
            ):
                continue
            client = app.test_client()
            if role:
                login(client, world.users[role].email)
            url = rule.build({name: ids.get(name, 1) for name in rule.arguments}, append_unknown=False)[1]
            client.post(url, data=plausible)
    assert db.session.execute(sa.select(sa.func.count(RemovalRequest.id))).scalar() == 0
    # There is no form for it either: no page links or posts to a way of filing a case.
    support = support_client(app)
    for path in ("/support/removal-requests", "/help"):
        assert "sendgrid/inbound" not in support.get(path).get_data(as_text=True)


@pytest.mark.parametrize("wire_format", WIRE_FORMATS)
def test_approving_one_case_closes_the_others_from_that_address(app, blocked, keys, wire_format):  # noqa: F811
    first = file_case(app, sign(keys, mail(f"Jane <{ADDRESS}>", body="Remove me please\r\n")))
    second = file_case(app, sign(keys, mail(f"Jane <{ADDRESS}>", body="Did you get my mail?\r\n")))
    other = file_case(app, sign(keys, mail("someone@clinic.example")))
    removals.approve(second, blocked.users["support"], "")
    db.session.expire_all()
    assert (first.status, second.status, other.status) == ("closed", "approved", "pending")
    assert f"case {second.id}" in first.decision_note
    assert removals.case_standing(first).label == "Closed"
    [closed] = audit_rows("removal.closed")
    assert closed.subject_id == first.id and closed.clinic_id == blocked.clinic_a.id
    support = support_client(app)
    decided = support.get("/support/removal-requests?view=decided").get_data(as_text=True)
    assert "Closed" in decided and "Approved" in decided


@pytest.mark.parametrize("wire_format", WIRE_FORMATS)
def test_a_case_whose_address_left_the_spam_list_cannot_be_approved(app, blocked, keys, wire_format):  # noqa: F811
    case = file_case(app, sign(keys, mail(f"Jane <{ADDRESS}>")))
    db.session.execute(sa.delete(SpamListEntry).where(SpamListEntry.address == ADDRESS))
    db.session.commit()
    with pytest.raises(removals.DecisionRefused, match="not on the spam list"):
        removals.approve(case, blocked.users["support"], "")
    assert support_client(app).post(f"/support/removal-requests/{case.id}/approve").status_code == 303
    db.session.refresh(case)
    assert case.status == "pending"


def test_the_sandbox_demo_plays_the_client_and_support_lifts_the_block(app, blocked):
    """The demo's "client's email": written and signed by the sandbox, through the real route and check."""
    app.config.pop("DKIM_DNSFUNC")  # the sandbox's own DNS publishes its key
    result = app.test_cli_runner().invoke(args=["sandbox-client-mail", "--from", ADDRESS])
    assert result.exit_code == 0, result.output
    run_jobs(app)
    case = db.session.execute(sa.select(RemovalRequest)).scalar_one()
    assert case.verdict == "verified", case.evidence
    assert case.evidence["signed_headers"]["to"] == app.config["SUPPORT_ADDRESS"]
    assert removals.case_standing(case).approvable
    removals.approve(case, blocked.users["support"], "demo")
    run_jobs(app)
    db.session.refresh(case)
    assert case.lifted_at is not None and ADDRESS not in reported(app)
    # The button does the same from the client file; beside a real provider neither exists.
    clinician = app.test_client()
    login(clinician, "clinician@a.example")
    assert clinician.post(f"/clients/{blocked.client_a.id}/sandbox-removal-mail").status_code == 303
    assert db.session.execute(sa.select(sa.func.count(RemovalRequest.id))).scalar() == 2
    app.config["EMAIL_PROVIDER"] = "sendgrid"
    assert clinician.post(f"/clients/{blocked.client_a.id}/sandbox-removal-mail").status_code == 404
    result = app.test_cli_runner().invoke(args=["sandbox-client-mail", "--from", ADDRESS])
    assert result.exit_code != 0 and "sandbox" in result.output


def test_a_stuck_alert_names_the_email_and_support_may_open_only_its_timeline(app, blocked):
    from datetime import timedelta

    from webapp.models import Email, utcnow

    email = db.session.execute(sa.select(Email)).scalars().first()
    email.status = "processed"
    email.status_received_at = email.status_changed_at = utcnow() - timedelta(minutes=20)
    db.session.commit()
    assert maintenance.flag_stuck_emails(utcnow()) == 1
    [alert] = db.session.execute(
        sa.select(OperatorAlert).where(OperatorAlert.kind == "email_stuck")
    ).scalars()
    assert "Clinic A" in alert.message and "Jane Doe" in alert.message and email.to_address in alert.message
    support = support_client(app)
    queue = support.get("/support/removal-requests").get_data(as_text=True)
    assert f"/support/emails/{email.id}" in queue and "What to do" in queue
    timeline = support.get(f"/support/emails/{email.id}")
    assert timeline.status_code == 200 and email.app_message_id in timeline.get_data(as_text=True)
    unalerted = sending.queue_email(
        blocked.client_b, kind="receipt", subject="Receipt", body="Thanks", sent_by=None
    )
    assert support.get(f"/support/emails/{unalerted.id}").status_code == 404
    assert support.get(f"/clients/{blocked.client_a.id}").status_code in (403, 404)
    clinician = app.test_client()
    login(clinician, "clinician@a.example")
    assert clinician.get(f"/support/emails/{email.id}").status_code in (403, 404)


@pytest.mark.parametrize("wire_format", ["postmark"])
def test_a_lift_the_provider_refuses_waits_for_support_to_record_it(app, blocked, keys, wire_format):  # noqa: F811
    """Postmark answers a spam complaint's deletion with Failed: support must ask Postmark's support."""
    case = file_case(app, sign(keys, mail(f"Jane <{ADDRESS}>")))
    support = support_client(app)
    assert (
        support.post(f"/support/removal-requests/{case.id}/approve", data={"note": "ok"}).status_code == 303
    )
    run_jobs(app)  # the lift job: the provider refuses

    db.session.refresh(case)
    assert case.awaiting_provider and case.lifted_at is None and case.provider_request_at is not None
    assert "required authority" in case.provider_lift_detail
    assert removals.due_lifts() == []  # not retried against the provider: support asks it
    assert removals.lift_block(case.id) is False
    assert maintenance.sync_spam_list() >= 1  # still on the provider's list, and on ours
    with pytest.raises(sending.SendRefused):
        send(blocked)  # still blocked
    page = support.get(f"/support/removal-requests/{case.id}").get_data(as_text=True)
    assert "must be asked to lift this block" in page and "Postmark support" in page
    assert "Waiting for the email provider" in page
    queue = support.get("/support/removal-requests").get_data(as_text=True)
    assert "Waiting for the email provider" in queue and f"/support/removal-requests/{case.id}" in queue
    assert len(audit_rows("removal.provider_request_needed")) == 1
    [alert] = db.session.execute(
        sa.select(OperatorAlert).where(OperatorAlert.kind == "removal_provider_request_needed")
    ).scalars()
    assert alert.resolved_at is None and f"Removal case {case.id} " in alert.message

    # The client's file says the request was approved and the provider is being asked.
    clinician = app.test_client()
    login(clinician, "clinician@a.example")
    banner = clinician.get(f"/clients/{blocked.client_a.id}").get_data(as_text=True)
    assert "Emails to this address are blocked" in banner
    assert "request to be taken off the spam list was approved" in banner
    assert "Copy instructions for the client" not in banner
    attention = clinician.get("/attention").get_data(as_text=True)
    assert "support is asking our email provider to lift the block" in attention

    # Nobody but support may record the provider's lift, or play its support in the sandbox.
    for email in ("clinician@a.example", "owner@a.example"):
        other = app.test_client()
        login(other, email)
        for action in ("provider-lifted", "sandbox-reactivate"):
            assert other.post(f"/support/removal-requests/{case.id}/{action}").status_code in (403, 404)
    db.session.refresh(case)
    assert case.awaiting_provider and ADDRESS in reported(app)

    # Postmark's support reactivates the address (the sandbox plays it), then support records it.
    assert support.post(f"/support/removal-requests/{case.id}/sandbox-reactivate").status_code == 303
    assert ADDRESS not in reported(app)
    db.session.refresh(case)
    assert case.awaiting_provider  # nothing changes for us until support records it
    response = support.post(
        f"/support/removal-requests/{case.id}/provider-lifted", data={"note": "Postmark ticket 4711"}
    )
    assert response.status_code == 303
    db.session.refresh(case)
    assert case.lifted_at is not None and not case.awaiting_provider
    assert case.provider_done_by_id == blocked.users["support"].id
    db.session.refresh(alert)
    assert alert.resolved_at is not None  # dealt with, off the queue's open alerts
    assert (
        db.session.execute(sa.select(SpamListEntry).where(SpamListEntry.address == ADDRESS)).first() is None
    )
    [recorded] = audit_rows("removal.provider_lifted")
    assert (recorded.actor_id, recorded.clinic_id) == (blocked.users["support"].id, blocked.clinic_a.id)
    assert recorded.detail == f"{ADDRESS}: Postmark ticket 4711"
    assert len(audit_rows("removal.lifted")) == 1
    page = clinician.get(f"/clients/{blocked.client_a.id}").get_data(as_text=True)
    assert "Emails to this address are blocked" not in page
    email = send(blocked)  # sending resumes, and the provider takes it
    run_jobs(app)
    db.session.refresh(email)
    assert email.send_state == "accepted"
    with pytest.raises(removals.DecisionRefused, match="not waiting"):
        removals.record_provider_lift(case, blocked.users["support"], "again")
    assert len(audit_rows("removal.provider_lifted")) == 1
    app.config["SANDBOX_WIRE_FORMAT"] = "sendgrid"  # SendGrid's sandbox has no support desk to play
    assert support.post(f"/support/removal-requests/{case.id}/sandbox-reactivate").status_code == 404
