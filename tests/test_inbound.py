"""Spam-list removal requests by email (SendGrid Inbound Parse): a corpus of genuine and forged
mails, signed with keys generated here and served by an injected DNS lookup."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from email.utils import format_datetime, make_msgid

import dkim
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.test_security_html import html_guard, separate_requests  # noqa: F401 - autouse fixtures
from webapp.extensions import db
from webapp.models import AuditEntry, Client, RemovalRequest, utcnow
from webapp.services import inbound

INBOUND = "/webhooks/sendgrid/inbound"
ON_FILE = "jane@clinic.example"
SIGNED_HEADERS = [b"from", b"to", b"subject", b"date", b"message-id"]
# A look-alike of clinic.example ("clinіc", Cyrillic і), as its owner would register it.
HOMOGLYPH_DOMAIN = "xn--clnc-ozd.example"


def _key() -> tuple[bytes, bytes]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    der = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem, b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)


@dataclass
class Keys:
    """Signing keys by domain, and the DNS that publishes their public halves."""

    private: dict[str, bytes] = field(default_factory=dict)
    records: dict[bytes, bytes] = field(default_factory=dict)

    def add(self, domain: str, selector: str = "sel") -> None:
        pem, txt = _key()
        self.private[domain] = pem
        self.records[f"{selector}._domainkey.{domain}.".encode()] = txt

    def dns(self, name: bytes, timeout: int = 5) -> bytes | None:
        return self.records.get(name)


@pytest.fixture(scope="module")
def keys() -> Keys:
    found = Keys()
    for domain in ("clinic.example", "evil.example", "lists.example", HOMOGLYPH_DOMAIN, "example"):
        found.add(domain)
    return found


@pytest.fixture
def intake(app, keys):
    """The app with the test DNS, and a client file holding the address on file."""
    app.config["DKIM_DNSFUNC"] = keys.dns
    from webapp.models import Clinic

    clinic = Clinic(name="Clinic A")
    db.session.add(clinic)
    db.session.flush()
    db.session.add(Client(clinic_id=clinic.id, name="Jane Doe", email="Jane@Clinic.example"))
    db.session.commit()
    return app


def mail(
    from_header: str | list[str] = f"Jane Doe <{ON_FILE}>",
    *,
    subject: str = "Please take me off the spam list",
    body: str = "Hello,\r\nI reported your reminder as spam by mistake. Please remove me.\r\nJane\r\n",
    date: object = "now",
    extra: list[str] | None = None,
    content_type: str = "text/plain; charset=utf-8",
) -> bytes:
    """Build a raw mail, byte for byte, so tests control every header."""
    froms = from_header if isinstance(from_header, list) else [from_header]
    lines = [f"From: {value}" for value in froms]
    lines += ["To: support@clinicmail.example", f"Subject: {subject}"]
    if date == "now":
        date = utcnow() - timedelta(minutes=2)
    if date is not None:
        lines.append(f"Date: {format_datetime(date)}")
    lines += [f"Message-ID: {make_msgid(domain='clinic.example')}", "MIME-Version: 1.0"]
    lines.append(f"Content-Type: {content_type}")
    lines += extra or []
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode("utf-8")


def sign(keys: Keys, raw: bytes, domain: str = "clinic.example", key_of: str | None = None) -> bytes:
    """Prepend a DKIM signature for `domain`, made with the key of `key_of` (default: its own)."""
    header = dkim.sign(
        raw,
        b"sel",
        domain.encode(),
        keys.private[key_of or domain],
        include_headers=SIGNED_HEADERS,
    )
    return header + raw


def post(client, raw: bytes, dkim_field: str = "none", **fields: str):
    """Post a mail the way Inbound Parse does with "POST the raw, full MIME message"."""
    data = {
        "email": raw.decode("utf-8", "replace"),
        "dkim": dkim_field,
        "SPF": "pass",
        "to": "support@clinicmail.example",
        "from": "whatever the mail claims",
        "envelope": json.dumps({"to": ["support@clinicmail.example"], "from": "bounce@evil.example"}),
        "charsets": json.dumps({"to": "UTF-8", "from": "UTF-8", "subject": "UTF-8"}),
        "spam_score": "0.1",
        **fields,
    }
    return client.post(INBOUND, data=data, content_type="multipart/form-data")


def cases() -> list[RemovalRequest]:
    db.session.expire_all()
    return list(db.session.execute(sa.select(RemovalRequest).order_by(RemovalRequest.id)).scalars())


# The corpus: (name, build(keys) -> (raw mail, SendGrid's dkim field), verdict, reasons, from_address)
Build = Callable[[Keys], tuple[bytes, str]]
OLD = utcnow() - timedelta(days=8)


def _tampered(keys: Keys) -> tuple[bytes, str]:
    raw = sign(keys, mail())
    return raw.replace(b"Please remove me.", b"Please remove me and send everything to evil."), "none"


def _two_signatures(keys: Keys) -> tuple[bytes, str]:
    # A mailing list signed on top of the client's own signature: dkimpy's verify() alone
    # would judge the topmost, unaligned one.
    return sign(keys, sign(keys, mail()), domain="lists.example"), "none"


CORPUS: list[tuple[str, Build, str, set[str], str]] = [
    ("valid aligned DKIM", lambda k: (sign(k, mail()), "none"), "verified", set(), ON_FILE),
    (
        "sender in a subdomain of the signer",
        lambda k: (sign(k, mail(f"Jane <jane@mail.{'clinic.example'}>")), "none"),
        "verified",
        set(),
        "jane@mail.clinic.example",
    ),
    (
        "uppercase variant of the address",
        lambda k: (sign(k, mail("JANE@Clinic.Example")), "none"),
        "verified",
        set(),
        ON_FILE,
    ),
    (
        "+tag variant (authentic, but not the address on file)",
        lambda k: (sign(k, mail("jane+remove@clinic.example")), "none"),
        "verified",
        set(),
        "jane+remove@clinic.example",
    ),
    ("two signatures, the aligned one below", _two_signatures, "verified", set(), ON_FILE),
    (
        "display-name spoof",
        lambda k: (sign(k, mail(f'"{ON_FILE}" <attacker@evil.example>'), "evil.example"), "none"),
        "unverified",
        {"display_name_address"},
        "attacker@evil.example",
    ),
    (
        "encoded display-name spoof",
        lambda k: (
            sign(k, mail("=?utf-8?b?amFuZUBjbGluaWMuZXhhbXBsZQ==?= <attacker@evil.example>"), "evil.example"),
            "none",
        ),
        "unverified",
        {"display_name_address"},
        "attacker@evil.example",
    ),
    (
        "two From headers",
        lambda k: (sign(k, mail([ON_FILE, "attacker@evil.example"]), "evil.example"), "none"),
        "unverified",
        {"multiple_from"},
        "",
    ),
    (
        "group syntax",
        lambda k: (sign(k, mail(f"Friends: {ON_FILE};")), "none"),
        "unverified",
        {"group_syntax"},
        "",
    ),
    (
        "<a>:<b> syntax",
        lambda k: (sign(k, mail(f"<attacker@evil.example>:<{ON_FILE}>"), "evil.example"), "none"),
        "unverified",
        {"from_defect"},
        "",
    ),
    (
        "bare address then angle address",
        lambda k: (sign(k, mail(f"{ON_FILE} <attacker@evil.example>"), "evil.example"), "none"),
        "unverified",
        {"from_defect"},
        "",
    ),
    (
        "two mailboxes in one From",
        lambda k: (sign(k, mail(f"{ON_FILE}, attacker@evil.example")), "none"),
        "unverified",
        {"multiple_mailboxes"},
        "",
    ),
    (
        "unaligned DKIM d=",
        lambda k: (sign(k, mail(), "evil.example"), "none"),
        "unverified",
        {"no_aligned_dkim"},
        ON_FILE,
    ),
    (
        "d= is a bare top-level domain",
        lambda k: (sign(k, mail(), "example"), "none"),
        "unverified",
        {"no_aligned_dkim"},
        ON_FILE,
    ),
    (
        "aligned d= signed with someone else's key",
        lambda k: (sign(k, mail(), "clinic.example", key_of="evil.example"), "none"),
        "unverified",
        {"no_aligned_dkim"},
        ON_FILE,
    ),
    ("body tampered after signing", _tampered, "unverified", {"no_aligned_dkim"}, ON_FILE),
    ("no signature", lambda k: (mail(), "none"), "unverified", {"no_aligned_dkim"}, ON_FILE),
    (
        "forged Authentication-Results claiming pass",
        lambda k: (
            mail(
                extra=[
                    "Authentication-Results: mx.sendgrid.net; dkim=pass header.d=clinic.example; "
                    "spf=pass smtp.mailfrom=clinic.example; dmarc=pass header.from=clinic.example"
                ]
            ),
            "none",
        ),
        "unverified",
        {"no_aligned_dkim"},
        ON_FILE,
    ),
    (
        "SendGrid dkim field: aligned pass",
        lambda k: (mail(), "{@clinic.example : pass}"),
        "verified",
        set(),
        ON_FILE,
    ),
    (
        "SendGrid dkim field: several entries, one aligned pass",
        lambda k: (mail(), "{@lists.example : pass, @clinic.example : pass}"),
        "verified",
        set(),
        ON_FILE,
    ),
    (
        "SendGrid dkim field: unaligned pass",
        lambda k: (mail(), "{@evil.example : pass}"),
        "unverified",
        {"no_aligned_dkim"},
        ON_FILE,
    ),
    (
        "SendGrid dkim field: look-alike suffix",
        lambda k: (mail(), "{@evilclinic.example : pass}"),
        "unverified",
        {"no_aligned_dkim"},
        ON_FILE,
    ),
    (
        "SendGrid dkim field: aligned fail",
        lambda k: (mail(), "{@clinic.example : fail}"),
        "unverified",
        {"no_aligned_dkim"},
        ON_FILE,
    ),
    (
        "SendGrid dkim field: garbage",
        lambda k: (mail(), '{{pass}} clinic.example=pass; "dkim": "pass" @: pass'),
        "unverified",
        {"no_aligned_dkim"},
        ON_FILE,
    ),
    (
        "SendGrid pass but the From is spoofed by display name",
        lambda k: (mail(f'"{ON_FILE}" <attacker@evil.example>'), "{@evil.example : pass}"),
        "unverified",
        {"display_name_address"},
        "attacker@evil.example",
    ),
    (
        "homoglyph domain, validly signed by its owner",
        lambda k: (sign(k, mail(f"jane@{HOMOGLYPH_DOMAIN}"), HOMOGLYPH_DOMAIN), "none"),
        "unverified",
        {"idn_address"},
        f"jane@{HOMOGLYPH_DOMAIN}",
    ),
    (
        "homoglyph domain in raw UTF-8",
        lambda k: (mail("jane@clіnic.example"), "{@clinic.example : pass}"),
        "unverified",
        {"from_defect"},
        "",
    ),
    ("old Date (replay)", lambda k: (sign(k, mail(date=OLD)), "none"), "unverified", {"stale_date"}, ON_FILE),
    (
        "Date in the future",
        lambda k: (sign(k, mail(date=utcnow() + timedelta(days=3))), "none"),
        "unverified",
        {"future_date"},
        ON_FILE,
    ),
    ("no Date", lambda k: (sign(k, mail(date=None)), "none"), "unverified", {"no_date"}, ON_FILE),
    ("no From", lambda k: (mail([]), "{@clinic.example : pass}"), "unverified", {"no_from"}, ""),
]

SPOOFS = {name for name, _, verdict, _, _ in CORPUS if verdict == "unverified"}


@pytest.mark.parametrize(
    ("name", "build", "verdict", "reasons", "address"), CORPUS, ids=[case[0] for case in CORPUS]
)
def test_each_mail_of_the_corpus_gets_the_right_verdict(intake, keys, name, build, verdict, reasons, address):
    raw, dkim_field = build(keys)
    response = post(intake.test_client(), raw, dkim_field)
    assert response.status_code == 200, response.data
    [case] = cases()
    assert case.verdict == verdict, case.evidence
    assert reasons <= set(case.evidence["reasons"]), case.evidence
    if verdict == "verified":
        assert case.evidence["reasons"] == []
    if address:
        assert case.from_address == address
    assert case.status == "pending"
    if name in SPOOFS:
        # A spoof never yields a verified case, least of all for the address on file.
        assert not any(c.verdict == "verified" for c in cases())


def test_the_corpus_is_large_enough_and_covers_both_verdicts():
    assert len(CORPUS) >= 20
    assert {verdict for _, _, verdict, _, _ in CORPUS} == {"verified", "unverified"}


def test_a_verified_case_keeps_its_evidence_and_a_plain_text_excerpt(intake, keys):
    body = "Please remove me.\r\n" + "x" * 3000
    raw = sign(keys, mail(body=body))
    assert post(intake.test_client(), raw).status_code == 200
    [case] = cases()
    assert case.evidence["verified_by"] == "dkim"
    assert case.evidence["from_domain"] == "clinic.example"
    [signature] = case.evidence["dkim"]
    assert signature == {"d": "clinic.example", "s": "sel", "result": "pass", "aligned": True, "error": ""}
    assert case.evidence["spf"] == "pass"
    assert case.body_excerpt.startswith("Please remove me.")
    assert len(case.body_excerpt) == inbound.EXCERPT_CHARS
    assert case.subject == "Please take me off the spam list"
    assert case.message_id.endswith("@clinic.example>")
    audit = db.session.execute(sa.select(AuditEntry).where(AuditEntry.action == "removal.received")).scalars()
    assert [(entry.subject_id, entry.detail) for entry in audit] == [(case.id, "verified")]


def test_only_the_plain_text_part_is_kept_never_html(intake, keys):
    boundary = "b1"
    body = (
        f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nPlain words\r\n"
        f"--{boundary}\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p onclick=x()>Rich</p>\r\n"
        f"--{boundary}--\r\n"
    )
    raw = sign(keys, mail(body=body, content_type=f'multipart/alternative; boundary="{boundary}"'))
    assert post(intake.test_client(), raw).status_code == 200
    [case] = cases()
    assert case.verdict == "verified"
    assert case.body_excerpt == "Plain words"
    html_only = mail(body="<p>Only HTML</p>", content_type="text/html; charset=utf-8")
    assert post(intake.test_client(), html_only).status_code == 200
    assert cases()[-1].body_excerpt == ""


def test_a_redelivered_mail_files_one_case(intake, keys):
    raw = sign(keys, mail())
    client = intake.test_client()
    assert post(client, raw).status_code == 200
    assert post(client, raw).status_code == 200
    # A replay with an unsigned header added is the same signed mail: still one case.
    assert post(client, b"X-Replayed: yes\r\n" + raw).status_code == 200
    assert len(cases()) == 1
    unsigned = mail()
    assert post(client, unsigned).status_code == 200
    assert post(client, unsigned).status_code == 200
    assert len(cases()) == 2


def test_a_tampered_copy_filed_first_does_not_swallow_the_genuine_mail(intake, keys):
    genuine = sign(keys, mail())
    client = intake.test_client()
    assert post(client, genuine.replace(b"by mistake", b"on purpose")).status_code == 200
    assert post(client, genuine).status_code == 200
    assert [case.verdict for case in cases()] == ["unverified", "verified"]


def test_a_dns_timeout_asks_sendgrid_to_retry_and_files_nothing(intake, keys):
    def timing_out(name: bytes, timeout: int = 5) -> bytes | None:
        raise dkim.DnsTimeoutError("timed out")

    raw = sign(keys, mail())
    intake.config["DKIM_DNSFUNC"] = timing_out
    assert post(intake.test_client(), raw).status_code == 503
    assert cases() == []
    intake.config["DKIM_DNSFUNC"] = keys.dns
    assert post(intake.test_client(), raw).status_code == 200
    assert [case.verdict for case in cases()] == ["verified"]


def test_a_database_failure_is_a_5xx_so_sendgrid_retries(intake, keys, monkeypatch):
    def broken(*args, **kwargs):
        raise sa.exc.OperationalError("INSERT", {}, Exception("database is down"))

    monkeypatch.setattr(db.session, "flush", broken)
    response = post(intake.test_client(), sign(keys, mail()))
    assert 500 <= response.status_code < 600
    monkeypatch.undo()
    assert cases() == []


def test_a_malformed_form_is_400(intake):
    client = intake.test_client()
    assert client.post(INBOUND, data={"dkim": "none"}, content_type="multipart/form-data").status_code == 400
    assert client.post(INBOUND, json={"email": "From: a@b.example"}).status_code == 400
    assert post(client, b"   ").status_code == 400
    assert cases() == []


def test_a_large_mail_is_accepted(intake, keys):
    # Larger than Flask's default limit for one form field (500 kB): the raw mail is a field.
    attachment = "".join(f"{'z' * 76}\r\n" for _ in range(9000))
    raw = sign(keys, mail(body="Please remove me.\r\n" + attachment))
    assert len(raw) > 600_000
    assert post(intake.test_client(), raw).status_code == 200
    assert [case.verdict for case in cases()] == ["verified"]


def test_nul_bytes_and_undecodable_bytes_are_stored_cleanly(intake):
    raw = mail(subject="Hello\x00there", body="Body\x00with a NUL") + b"\xff\xfe latin-1 bytes\r\n"
    assert post(intake.test_client(), raw).status_code == 200
    [case] = cases()
    assert case.subject == "Hellothere"
    assert "\x00" not in case.body_excerpt and case.body_excerpt.startswith("Bodywith a NUL")


def test_a_sender_that_cannot_be_read_is_kept_as_written(intake, keys):
    raw = sign(keys, mail(f"{ON_FILE} <attacker@evil.example>"), "evil.example")
    assert post(intake.test_client(), raw).status_code == 200
    [case] = cases()
    assert case.from_address == f"{ON_FILE} <attacker@evil.example>"
    assert case.evidence["reasons"] == ["from_defect"]


@pytest.mark.parametrize("provider", ["sandbox", "sendgrid"])
def test_the_shared_secret_is_required_when_set(make_app, keys, provider):
    app = make_app(INBOUND_WEBHOOK_SECRET="s3cret-value", EMAIL_PROVIDER=provider, SENDGRID_API_KEY="SG.test")
    app.config["DKIM_DNSFUNC"] = keys.dns
    client = app.test_client()
    raw = sign(keys, mail())
    assert post(client, raw).status_code == 401
    wrong = {"Authorization": "Basic " + base64.b64encode(b"sendgrid:wrong").decode()}
    assert client.post(INBOUND, data={"email": raw.decode()}, headers=wrong).status_code == 401
    right = {"Authorization": "Basic " + base64.b64encode(b"any-user:s3cret-value").decode()}
    response = client.post(INBOUND, data={"email": raw.decode(), "dkim": "none"}, headers=right)
    assert response.status_code == 200
    with app.app_context():
        assert [case.verdict for case in cases()] == ["verified"]


def test_without_a_secret_the_route_is_closed_outside_the_sandbox(make_app, keys):
    app = make_app(EMAIL_PROVIDER="sendgrid", SENDGRID_API_KEY="SG.test")
    client = app.test_client()
    assert post(client, sign(keys, mail())).status_code == 403
    with_any = {"Authorization": "Basic " + base64.b64encode(b"a:").decode()}
    assert client.post(INBOUND, data={"email": "x"}, headers=with_any).status_code == 403


def test_sendgrid_dkim_field_parsing_is_defensive():
    parse = inbound.parse_receiver_dkim
    assert parse("{@glennhotel-com.20150623.gappssmtp.com : pass}") == [
        {"d": "glennhotel-com.20150623.gappssmtp.com", "result": "pass"}
    ]
    assert parse("{@a.example : pass, @B.Example. : fail}") == [
        {"d": "a.example", "result": "pass"},
        {"d": "b.example", "result": "fail"},
    ]
    for garbage in ("none", "", "{}", "pass", "{: pass}", "{{{{", "\x00" * 10, "@" * 5000):
        assert all(entry["result"] != "pass" or entry["d"] for entry in parse(garbage))
        assert parse(garbage) == []


def test_alignment_is_relaxed_but_never_a_bare_top_level_domain():
    assert inbound.aligned("clinic.example", "clinic.example")
    assert inbound.aligned("Clinic.Example.", "mail.clinic.example")
    assert not inbound.aligned("mail.clinic.example", "clinic.example")
    assert not inbound.aligned("example", "clinic.example")
    assert not inbound.aligned("nic.example", "clinic.example")
    assert not inbound.aligned("", "clinic.example")


def test_production_verifies_with_real_dns_unless_a_test_injects_a_lookup(app):
    assert "DKIM_DNSFUNC" not in app.config
    assert inbound._configured_dns() is dkim.dnsplug.get_txt
