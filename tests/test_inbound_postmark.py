"""Removal requests through Postmark's inbound webhook (JSON with the raw message): a Postmark-only
deployment receives and proves them end to end with the same filing and check as SendGrid's
Inbound Parse, the sandbox plays Postmark's side, and hostile posts get a 4xx, never a 500."""

from __future__ import annotations

import json
import secrets
import uuid

import pytest
import sqlalchemy as sa

from tests.helpers import PASSWORD as USER_PASSWORD
from tests.helpers import login, run_jobs
from tests.inbound_mail import ON_FILE, SUPPORT, mail, sign
from webapp.extensions import db
from webapp.models import Client, Clinic, OperatorAlert, RemovalRequest, SpamListEntry, utcnow
from webapp.providers import inbound_reader
from webapp.providers.postmark_inbound import read_inbound
from webapp.sandbox.client_mail import postmark_inbound_post
from webapp.services import accounts, demo, removals

# Every page rendered here is checked for CSP breakers; each request starts with an empty `g` (conftest.py).
pytestmark = pytest.mark.usefixtures("separate_requests", "html_guard")

URL = "/webhooks/postmark/inbound"
USER = "postmark-hook"
PASSWORD = secrets.token_urlsafe(32)
SUPPORT_USER = "support@platform.example"


def inbound_json(raw: bytes | None, **fields: object) -> bytes:
    """Postmark's inbound JSON for a raw mail: its parse, and RawEmail as Postmark sends it (LF line
    ends, its spam check's headers prepended)."""
    item: dict[str, object] = {
        "From": ON_FILE,
        "FromName": "Jane Doe",
        "FromFull": {"Email": ON_FILE, "Name": "Jane Doe", "MailboxHash": ""},
        "To": SUPPORT,
        "ToFull": [{"Email": SUPPORT, "Name": "", "MailboxHash": ""}],
        "OriginalRecipient": SUPPORT,
        "Subject": "Please take me off the spam list",
        "MessageID": str(uuid.uuid4()),
        "MessageStream": "inbound",
        "TextBody": "Please remove me.",
        "HtmlBody": "",
        "Headers": [
            {"Name": "Received-SPF", "Value": "pass (mx.postmarkapp.com) envelope-from=jane@clinic.example"},
            {"Name": "X-Spam-Tests", "Value": "DKIM_SIGNED,DKIM_VALID,DKIM_VALID_AU,SPF_PASS"},
        ],
        "Attachments": [],
    }
    if raw is not None:
        prepended = "Received: by p-pm-inboundg01 (Postfix)\nX-Spam-Status: No\n"
        item["RawEmail"] = prepended + raw.decode("utf-8", "surrogateescape").replace("\r\n", "\n")
    item.update(fields)
    return json.dumps(item).encode()


def cases() -> list[RemovalRequest]:
    db.session.expire_all()
    return list(db.session.execute(sa.select(RemovalRequest).order_by(RemovalRequest.id)).scalars())


@pytest.fixture
def postmark(make_app, keys):
    """A Postmark-only deployment: Jane's address on a client file and on the spam list, support."""
    app = make_app(
        EMAIL_PROVIDER="postmark",
        POSTMARK_SERVER_TOKEN="server-token",
        POSTMARK_WEBHOOK_USERNAME=USER,
        POSTMARK_WEBHOOK_PASSWORD=PASSWORD,
    )
    app.config["DKIM_DNSFUNC"] = keys.dns
    with app.app_context():
        clinic = Clinic(name="Clinic A")
        db.session.add(clinic)
        db.session.flush()
        accounts.create_user(SUPPORT_USER, "Sue Support", "support", USER_PASSWORD, None)
        db.session.add(Client(clinic_id=clinic.id, name="Jane Doe", email=ON_FILE))
        db.session.add(SpamListEntry(address=ON_FILE, reported_at=utcnow(), source="webhook"))
        db.session.commit()
        yield app


def post(app, body: bytes, auth: tuple[str, str] | None = (USER, PASSWORD), **kwargs: object):
    return app.test_client().post(URL, data=body, content_type="application/json", auth=auth, **kwargs)


def test_a_postmark_only_deployment_receives_and_proves_a_removal_request(postmark, keys):
    body = inbound_json(sign(keys, mail(f"Jane Doe <{ON_FILE}>")))
    assert post(postmark, body).status_code == 200
    [case] = cases()
    assert case.verdict == "checking"
    assert b"\r\n" in case.raw_mail and b"\n" not in case.raw_mail.replace(b"\r\n", b"")
    assert case.evidence["receiver"] == "Postmark"
    assert case.evidence["spf"].startswith("pass")
    assert post(postmark, body).status_code == 200  # Postmark posts it again: still one case
    assert len(cases()) == 1

    run_jobs(postmark)  # the check job, with the same proof as any other inbound mail
    [case] = cases()
    assert case.verdict == "verified", case.evidence
    assert case.from_address == ON_FILE and case.evidence["signed_headers"]["to"] == SUPPORT
    standing = removals.case_standing(case)
    assert standing.approvable and standing.label == "Approvable"
    support = postmark.test_client()
    login(support, SUPPORT_USER)
    page = support.get(f"/support/removal-requests/{case.id}").get_data(as_text=True)
    assert "Approvable" in page and "Postmark’s DKIM result: SpamAssassin DKIM_SIGNED" in page
    response = support.post(f"/support/removal-requests/{case.id}/approve", data={"note": "Signed"})
    assert response.status_code == 303
    db.session.refresh(case)
    assert case.status == "approved"


def test_an_unsigned_or_forged_mail_through_postmark_is_filed_but_not_proven(postmark, keys):
    assert post(postmark, inbound_json(mail(body="unsigned\r\n"))).status_code == 200
    forged = sign(keys, mail(), "clinic.example", key_of="evil.example")
    assert post(postmark, inbound_json(forged)).status_code == 200
    run_jobs(postmark)
    assert [case.verdict for case in cases()] == ["unverified", "unverified"]
    assert all("no_aligned_dkim" in case.evidence["reasons"] for case in cases())
    assert not any(removals.case_standing(case).approvable for case in cases())


def test_without_the_raw_message_the_case_is_unverifiable_and_the_alert_names_the_setting(postmark):
    assert post(postmark, inbound_json(None)).status_code == 200
    [case] = cases()
    assert case.verdict == "unverifiable" and case.evidence["reasons"] == ["parsed_mode"]
    assert case.from_address == ON_FILE and case.body_excerpt == "Please remove me."
    assert not removals.case_standing(case).approvable
    [alert] = db.session.execute(sa.select(OperatorAlert)).scalars()
    assert alert.kind == "inbound_parsed_mode"
    assert "Include raw email content in JSON payload" in alert.message


@pytest.mark.parametrize(
    ("name", "body", "auth", "status"),
    [
        ("no credentials", inbound_json(b"x"), None, 401),
        ("wrong password", inbound_json(b"x"), (USER, "guess"), 401),
        ("wrong user", inbound_json(b"x"), ("someone", PASSWORD), 401),
        ("not JSON", b"From: jane@clinic.example\r\n\r\nhi", (USER, PASSWORD), 400),
        ("not UTF-8", b'{"RawEmail": "\xff\xfe"}', (USER, PASSWORD), 400),
        ("empty", b"", (USER, PASSWORD), 400),
        ("an array", b"[]", (USER, PASSWORD), 400),
        ("a string", b'"RawEmail"', (USER, PASSWORD), 400),
        ("an empty object", b"{}", (USER, PASSWORD), 400),
        ("nested past the parser", b"[" * 200_000 + b"]" * 200_000, (USER, PASSWORD), 400),
        ("a number past Python's limit", b'{"RawEmail": ' + b"1" * 5000 + b"}", (USER, PASSWORD), 400),
        ("RawEmail not a string", b'{"RawEmail": {"a": 1}}', (USER, PASSWORD), 400),
        ("Headers not an array", b'{"RawEmail": "", "Headers": "x"}', (USER, PASSWORD), 400),
        ("an event posted here", json.dumps({"RecordType": "Bounce"}).encode(), (USER, PASSWORD), 400),
    ],
)
def test_hostile_posts_get_a_4xx_and_file_nothing(postmark, name, body, auth, status):
    response = post(postmark, body, auth)
    assert response.status_code == status, name
    if status == 401:
        assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert cases() == []


def test_a_post_past_the_size_limit_gets_413(postmark, keys):
    postmark.config["INBOUND_MAX_BYTES"] = 2000
    assert post(postmark, inbound_json(sign(keys, mail(body="x" * 5000)))).status_code == 413
    assert cases() == []


@pytest.mark.parametrize(
    ("name", "raw_email"),
    [
        ("a NUL in the headers", "From: jane@clinic.example\x00\nTo: x\n\nhi"),
        ("a lone CR", "From: jane@clinic.example\rTo: support@clinicmail.example\n\nhi"),
        ("a lone surrogate", "From: \ud800@clinic.example\n\nhi"),
        ("escaped 8-bit bytes", "From: j\udce9@clinic.example\nSubject: \udcff\n\n\udcfe"),
        ("no headers at all", "just words"),
        ("a colossal header", "X-Pad: " + "a" * 300_000 + "\n\nhi"),
    ],
)
def test_hostile_mail_in_a_well_formed_post_is_filed_and_refused_never_a_500(postmark, name, raw_email):
    assert post(postmark, inbound_json(None, RawEmail=raw_email)).status_code == 200, name
    run_jobs(postmark)
    [case] = cases()
    assert case.verdict == "unverified" and case.evidence["reasons"], case.evidence
    support = postmark.test_client()
    login(support, SUPPORT_USER)
    assert support.get(f"/support/removal-requests/{case.id}").status_code == 200


def test_the_postmark_route_is_closed_where_the_app_does_not_use_postmark(app, keys):
    # The sandbox here plays SendGrid: nothing holds Postmark's credentials to check.
    assert post(app, inbound_json(sign(keys, mail())), auth=None).status_code == 403
    assert post(app, inbound_json(sign(keys, mail())), auth=("sandbox", "x")).status_code == 403
    assert cases() == []


@pytest.mark.parametrize("wire_format", ["postmark"])
def test_the_sandbox_plays_postmarks_inbound_webhook_end_to_end(app, world, wire_format):
    """The demo's client mail, signed by the sandbox, posted as Postmark's JSON with its credentials."""
    address = world.client_a.email
    db.session.add(SpamListEntry(address=address, reported_at=utcnow(), source="webhook"))
    db.session.commit()
    assert demo.post_sandbox_client_mail(address) == 200
    result = app.test_cli_runner().invoke(args=["sandbox-client-mail", "--from", address])
    assert result.exit_code == 0, result.output
    run_jobs(app)
    first, second = cases()
    for case in (first, second):
        assert case.verdict == "verified", case.evidence
        assert case.evidence["receiver"] == "Postmark" and case.from_address == address
    assert removals.case_standing(second).approvable
    # Without the sandbox's credentials its route refuses the same post.
    raw = first.raw_mail
    assert post(app, postmark_inbound_post(raw)[0], auth=None).status_code == 401
    assert post(app, postmark_inbound_post(raw)[0], auth=("postmark", "guess")).status_code == 401


def test_the_reader_restores_crlf_and_keeps_8_bit_bytes(keys):
    raw = sign(
        keys,
        mail(body="Grüße aus Köln\r\n", content_type="text/plain; charset=iso-8859-1", encoding="latin-1"),
    )
    assert b"\xfc" in raw  # an 8-bit body, not UTF-8
    found = inbound_reader("postmark")("application/json", postmark_inbound_post(raw)[0])
    assert found.raw is not None and found.raw.endswith(raw)  # after the unsigned headers prepended
    assert found.receiver == "Postmark" and found.spf.startswith("pass")
    assert (
        read_inbound("", json.dumps({"RawEmail": "A: b\r\n\r\nc\nd"}).encode()).raw == b"A: b\r\n\r\nc\r\nd"
    )


def test_the_sendgrid_reader_keeps_its_dkim_field_for_information():
    from webapp.sandbox.client_mail import inbound_post

    body, content_type = inbound_post(
        b"From: x\r\n\r\nhi", dkim="{@clinic.example : pass}, {@evil.example : fail}"
    )
    found = inbound_reader("sendgrid")(content_type, body)
    assert found.raw == b"From: x\r\n\r\nhi" and found.receiver == "SendGrid"
    assert found.receiver_dkim_passes == ("clinic.example",)
    with pytest.raises(ValueError):
        inbound_reader("sendgrid")("application/json", b"{}")
