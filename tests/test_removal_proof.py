"""What a removal case shows and whether it can be approved, against mail an attacker sends first:
a proven request from the address on file is always filed and approvable, the case page shows only
the address that was proven, and ed25519 signatures verify. Through the real inbound route and
check job, as tests/test_inbound.py."""

from __future__ import annotations

import base64
import re

import nacl.signing
import pytest
import sqlalchemy as sa

from tests.helpers import login, run_jobs
from tests.inbound_mail import ON_FILE, SIGNED_HEADERS, Keys, mail, post, sign
from webapp.extensions import db
from webapp.models import Client, RemovalRequest, SpamListEntry, utcnow
from webapp.services import removals
from webapp.services.inbound import filing, proof

pytestmark = pytest.mark.usefixtures("separate_requests", "html_guard")

ED25519 = b"ed25519-sha256"


@pytest.fixture
def blocked(app, world, keys):
    """The app with the test DNS, and a client on file whose address is on the spam list."""
    app.config["DKIM_DNSFUNC"] = keys.dns
    db.session.add(Client(clinic_id=world.clinic_a.id, name="Jane Doe", email="Jane@Clinic.example"))
    db.session.add(SpamListEntry(address=ON_FILE, reported_at=utcnow(), source="webhook"))
    db.session.commit()
    return app


def cases() -> list[RemovalRequest]:
    db.session.expire_all()
    return list(db.session.execute(sa.select(RemovalRequest).order_by(RemovalRequest.id)).scalars())


def file_and_check(app, raw: bytes) -> RemovalRequest:
    """Post one mail as Inbound Parse does, run the queued check job, return the newest case."""
    assert post(app.test_client(), raw).status_code == 200
    run_jobs(app)
    return cases()[-1]


def with_message_id(raw: bytes, message_id: str) -> bytes:
    """The same mail with its Message-ID set (before signing)."""
    return re.sub(rb"Message-ID: <[^>]*>", f"Message-ID: {message_id}".encode(), raw, count=1)


def test_unproven_mail_sent_first_never_stops_the_clients_proven_request(blocked, keys):
    """Unsigned mails claiming the address, and an attacker's own signed mail, all carrying the
    Message-ID the client's mail will have: the client's proven request is still approvable."""
    message_id = "<reminder-42@clinic.example>"  # guessable: some mail programs number their mail
    for index in range(filing.UNPROVEN_PER_SENDER_PER_DAY + 2):
        file_and_check(blocked, with_message_id(mail(body=f"Remove me ({index})\r\n"), message_id))
    attacker = with_message_id(mail("attacker@evil.example"), message_id)
    assert file_and_check(blocked, sign(keys, attacker, "evil.example")).verdict == "verified"
    assert [case.status for case in cases()].count("closed") == 2  # unproven mail is still limited

    genuine = file_and_check(blocked, sign(keys, with_message_id(mail(), message_id)))
    assert genuine.verdict == "verified", genuine.evidence
    assert genuine.status == "pending"
    standing = removals.case_standing(genuine)
    assert standing.approvable and standing.label == "Approvable", standing
    # The client's own mail, posted again, is still the duplicate it is.
    again = file_and_check(blocked, b"Received: from relay.example\r\n" + genuine.raw_mail)
    assert "seen_before" in again.evidence["reasons"] and again.evidence["seen_in_case"] == genuine.id


@pytest.mark.parametrize(
    "from_header",
    [
        f"({ON_FILE}) <attacker@evil.example>",
        f"attacker@evil.example ({ON_FILE})",
        f"Attacker ({ON_FILE}) <attacker@evil.example>",
        f"=?utf-8?q?x?= (=?utf-8?b?{base64.b64encode(ON_FILE.encode()).decode()}?=) <attacker@evil.example>",
    ],
)
def test_the_case_shows_only_the_proven_address_never_a_comment(blocked, keys, from_header):
    case = file_and_check(blocked, sign(keys, mail(from_header), "evil.example"))
    assert case.from_address == "attacker@evil.example"
    assert case.evidence["signed_headers"]["from"] == "attacker@evil.example"
    support = blocked.test_client()
    login(support, "support@platform.example")
    page = support.get(f"/support/removal-requests/{case.id}").get_data(as_text=True)
    assert "attacker@evil.example" in page
    assert ON_FILE not in page and "jane@" not in page.lower()
    queue = support.get("/support/removal-requests").get_data(as_text=True)
    assert ON_FILE not in queue


@pytest.fixture
def ed25519_keys(keys: Keys) -> Keys:
    """An ed25519 key of clinic.example under selector "ed", published as dkimpy reads it."""
    key = nacl.signing.SigningKey.generate()
    keys.private["ed:clinic.example"] = base64.b64encode(bytes(key))
    keys.records[b"ed._domainkey.clinic.example."] = b"v=DKIM1; k=ed25519; p=" + base64.b64encode(
        bytes(key.verify_key)
    )
    return keys


def test_an_ed25519_signed_request_verifies_and_is_approvable(blocked, ed25519_keys):
    assert ED25519 in proof.ACCEPTED_ALGORITHMS
    raw = sign(ed25519_keys, mail(), selector="ed", algorithm=ED25519)
    assert b"a=ed25519-sha256" in raw
    case = file_and_check(blocked, raw)
    assert case.verdict == "verified", case.evidence
    assert [signature["result"] for signature in case.evidence["dkim"]] == ["pass"]
    assert removals.case_standing(case).approvable


def test_an_ed25519_signature_over_a_changed_mail_fails(blocked, ed25519_keys):
    raw = sign(ed25519_keys, mail(), selector="ed", algorithm=ED25519, headers=SIGNED_HEADERS)
    case = file_and_check(blocked, raw.replace(b"Please remove me.", b"Please remove me, and my dog."))
    assert case.verdict == "unverified" and case.evidence["reasons"] == ["no_aligned_dkim"]
    assert db.session.execute(sa.select(sa.func.count()).select_from(SpamListEntry)).scalar() == 1
