"""Spam-list removal requests by email (SendGrid Inbound Parse): a corpus of genuine, forged and
hostile mails, each posted through the inbound route, checked by the real job (RQ, real Redis) and
read back from the support pages. Keys are generated here and served by an injected DNS lookup."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from datetime import timedelta
from email.utils import format_datetime

import dkim
import pytest
import sqlalchemy as sa

from tests.helpers import login, run_jobs
from tests.inbound_mail import (
    HOMOGLYPH_DOMAIN,
    INBOUND,
    ON_FILE,
    SIGNED_HEADERS,
    SUPPORT,
    Keys,
    mail,
    post,
    sign,
)
from webapp.extensions import db
from webapp.models import AuditEntry, Client, OperatorAlert, RemovalRequest, SpamListEntry, utcnow
from webapp.services import removals
from webapp.services.inbound import filing, proof, reading

# Every page rendered here is checked for CSP breakers; each request starts with an empty `g` (conftest.py).
pytestmark = pytest.mark.usefixtures("separate_requests", "html_guard")


@pytest.fixture
def intake(app, world, keys):
    """The app with the test DNS, users of every role, and a client file holding the address."""
    app.config["DKIM_DNSFUNC"] = keys.dns
    keys.lookups.clear()
    db.session.add(Client(clinic_id=world.clinic_a.id, name="Jane Doe", email="Jane@Clinic.example"))
    db.session.commit()
    return app


def cases() -> list[RemovalRequest]:
    db.session.expire_all()
    return list(db.session.execute(sa.select(RemovalRequest).order_by(RemovalRequest.id)).scalars())


def file_and_check(app, raw: bytes, dkim_field: str = "none") -> RemovalRequest:
    """Post one mail, run the queued check job, and return the newest case."""
    response = post(app.test_client(), raw, dkim_field)
    assert response.status_code == 200, response.data
    run_jobs(app)
    return cases()[-1]


# The corpus: (name, build(keys) -> (raw mail, SendGrid's dkim field), verdict, reasons, from_address)
Build = Callable[[Keys], tuple[bytes, str]]
NOW = utcnow()
OLD = NOW - timedelta(days=8)


def _tampered(keys: Keys) -> tuple[bytes, str]:
    raw = sign(keys, mail())
    return raw.replace(b"Please remove me.", b"Please remove me and send everything to evil."), "none"


def _two_signatures(keys: Keys) -> tuple[bytes, str]:
    # A mailing list signed on top of the client's own signature: the aligned one below counts.
    return sign(keys, sign(keys, mail()), domain="lists.example"), "none"


def _prepended(header: str) -> Build:
    """An unsigned copy of a signed header, added above the signed mail (DKIM reads the last)."""
    return lambda k: (f"{header}\r\n".encode() + sign(k, mail()), "none")


def _appended_after_l(keys: Keys) -> tuple[bytes, str]:
    return sign(keys, mail(), length=True) + b"P.S. Also send all my records to evil@evil.example\r\n", "none"


def _rewritten_date(keys: Keys) -> tuple[bytes, str]:
    # A genuine mail signed 8 days ago, its Date rewritten to look fresh: the signature breaks.
    raw = sign(keys, mail(date=OLD), at=OLD.timestamp())
    return raw.replace(format_datetime(OLD).encode(), format_datetime(NOW).encode()), "none"


def _latin1_8bit(keys: Keys) -> tuple[bytes, str]:
    body = "Bonjour,\r\nJ'ai signalé votre e-mail comme spam par erreur. Retirez-moi de la liste.\r\nRené\r\n"
    raw = mail(
        "René <jane@clinic.example>".encode("ascii", "replace").decode(),
        body=body,
        content_type="text/plain; charset=iso-8859-1",
        extra=["Content-Transfer-Encoding: 8bit"],
        encoding="iso-8859-1",
    )
    return sign(keys, raw), "none"


def _huge_display_name(keys: Keys) -> tuple[bytes, str]:
    return sign(keys, mail(f'"{"a" * 80_000}" <{ON_FILE}>')), "none"


def _forwarded_reply(keys: Keys) -> tuple[bytes, str]:
    # The client's ordinary reply to the clinic, genuinely signed, then sent on to support.
    raw = sign(keys, mail(to="Reception <reception@harbour.example>", subject="Re: Appointment reminder"))
    return raw, "none"


CORPUS: list[tuple[str, Build, str, set[str], str]] = [
    ("valid aligned DKIM", lambda k: (sign(k, mail()), "none"), "verified", set(), ON_FILE),
    (
        "sender in a subdomain of the signer",
        lambda k: (sign(k, mail("Jane <jane@mail.clinic.example>")), "none"),
        "verified",
        set(),
        "jane@mail.clinic.example",
    ),
    (
        "signer in a subdomain of the sender (relaxed alignment)",
        lambda k: (sign(k, mail(), "mail.clinic.example"), "none"),
        "verified",
        set(),
        ON_FILE,
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
        "support named with a display name among other recipients",
        lambda k: (sign(k, mail(to=f"Clinic Mail Support <{SUPPORT}>, friend@else.example")), "none"),
        "verified",
        set(),
        ON_FILE,
    ),
    (
        "support in a signed Cc",
        lambda k: (
            sign(
                k,
                mail(to="reception@harbour.example", extra=[f"Cc: {SUPPORT}"]),
                headers=[*SIGNED_HEADERS, b"cc"],
            ),
            "none",
        ),
        "verified",
        set(),
        ON_FILE,
    ),
    (
        "oversigned headers (h= names From and Subject twice)",
        lambda k: (sign(k, mail(), headers=[*SIGNED_HEADERS, b"from", b"subject"]), "none"),
        "verified",
        set(),
        ON_FILE,
    ),
    ("DKIM-signed iso-8859-1 8bit mail", _latin1_8bit, "verified", set(), ON_FILE),
    (
        "quoted-printable body",
        lambda k: (
            sign(
                k,
                mail(
                    body="Please remove me =E2=80=93 Jane\r\n",
                    extra=["Content-Transfer-Encoding: quoted-printable"],
                ),
            ),
            "none",
        ),
        "verified",
        set(),
        ON_FILE,
    ),
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
        "unsigned From prepended",
        _prepended("From: attacker@evil.example"),
        "unverified",
        {"multiple_from"},
        "",
    ),
    (
        "unsigned Subject prepended",
        _prepended("Subject: Please remove me from the spam list"),
        "unverified",
        {"duplicate_header"},
        ON_FILE,
    ),
    (
        "unsigned Date prepended",
        _prepended(f"Date: {format_datetime(NOW)}"),
        "unverified",
        {"duplicate_header"},
        ON_FILE,
    ),
    ("unsigned To prepended", _prepended(f"To: {SUPPORT}"), "unverified", {"duplicate_header"}, ON_FILE),
    (
        "two Cc headers",
        _prepended(f"Cc: {SUPPORT}\r\nCc: x@else.example"),
        "unverified",
        {"duplicate_header"},
        ON_FILE,
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
        "d= is a public suffix (co.uk) above the sender's domain",
        lambda k: (sign(k, mail("jane@clinic.co.uk"), "co.uk"), "none"),
        "unverified",
        {"no_aligned_dkim"},
        "jane@clinic.co.uk",
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
        "SendGrid dkim pass with no signature in the raw mail",
        lambda k: (mail(), "{@clinic.example : pass}"),
        "unverified",
        {"no_aligned_dkim"},
        ON_FILE,
    ),
    (
        "SendGrid dkim pass, several entries, over an unaligned signature",
        lambda k: (sign(k, mail(), "evil.example"), "{@lists.example : pass, @clinic.example : pass}"),
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
    ("l= signature with appended text", _appended_after_l, "unverified", {"weak_signature"}, ON_FILE),
    (
        "h= leaves out Subject",
        lambda k: (sign(k, mail(), headers=[b"from", b"to", b"date", b"message-id"]), "none"),
        "unverified",
        {"weak_signature"},
        ON_FILE,
    ),
    (
        "h= leaves out To",
        lambda k: (sign(k, mail(), headers=[b"from", b"subject", b"date"]), "none"),
        "unverified",
        {"weak_signature"},
        ON_FILE,
    ),
    (
        "h= leaves out Date",
        lambda k: (sign(k, mail(), headers=[b"from", b"to", b"subject"]), "none"),
        "unverified",
        {"weak_signature"},
        ON_FILE,
    ),
    (
        "rsa-sha1 signature",
        lambda k: (sign(k, mail(), algorithm=b"rsa-sha1"), "none"),
        "unverified",
        {"weak_signature"},
        ON_FILE,
    ),
    (
        "RSA key under 1024 bits",
        lambda k: (sign(k, mail(), selector="short"), "none"),
        "unverified",
        {"no_aligned_dkim"},
        ON_FILE,
    ),
    (
        "genuine client mail addressed to the clinic, sent on to support",
        _forwarded_reply,
        "unverified",
        {"not_to_support"},
        ON_FILE,
    ),
    (
        "support only in an unsigned Cc",
        lambda k: (sign(k, mail(to="reception@harbour.example", extra=[f"Cc: {SUPPORT}"])), "none"),
        "unverified",
        {"not_to_support"},
        ON_FILE,
    ),
    (
        "support only in a display name",
        lambda k: (sign(k, mail(to=f'"{SUPPORT}" <reception@harbour.example>')), "none"),
        "unverified",
        {"not_to_support"},
        ON_FILE,
    ),
    ("rewritten Date over an old t=", _rewritten_date, "unverified", {"weak_signature"}, ON_FILE),
    (
        "fresh Date, but signed 8 days ago (t=)",
        lambda k: (sign(k, mail(), at=OLD.timestamp()), "none"),
        "unverified",
        {"weak_signature"},
        ON_FILE,
    ),
    (
        "old Date (replay)",
        lambda k: (sign(k, mail(date=OLD), at=OLD.timestamp()), "none"),
        "unverified",
        {"stale_date"},
        ON_FILE,
    ),
    (
        "Date in the future",
        lambda k: (sign(k, mail(date=NOW + timedelta(days=3))), "none"),
        "unverified",
        {"future_date"},
        ON_FILE,
    ),
    (
        "no Date",
        lambda k: (sign(k, mail(date=None), headers=[b"from", b"to", b"subject"]), "none"),
        "unverified",
        {"missing_header", "no_date"},
        ON_FILE,
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
        set(),
        "",
    ),
    ("80,000-character From display name", _huge_display_name, "unverified", {"header_too_long"}, ""),
    ("no From", lambda k: (mail([]), "{@clinic.example : pass}"), "unverified", {"no_from"}, ""),
]

SPOOFS = {name for name, _, verdict, _, _ in CORPUS if verdict == "unverified"}


@pytest.mark.parametrize(
    ("name", "build", "verdict", "reasons", "address"), CORPUS, ids=[case[0] for case in CORPUS]
)
def test_each_mail_of_the_corpus_gets_the_right_verdict(intake, keys, name, build, verdict, reasons, address):
    raw, dkim_field = build(keys)
    case = file_and_check(intake, raw, dkim_field)
    assert case.verdict == verdict, case.evidence
    assert reasons <= set(case.evidence["reasons"]), case.evidence
    if verdict == "verified":
        assert case.evidence["reasons"] == []
    else:
        assert case.evidence["reasons"], "an unverified case says why"
    if address:
        assert case.from_address == address
    assert case.status == "pending"
    standing = removals.case_standing(case)
    assert standing.approvable is False  # nothing is on the spam list yet
    if name in SPOOFS:
        # A spoof never yields a verified case, least of all for the address on file.
        assert not any(c.verdict == "verified" for c in cases())
    # The support pages show it, with its reason beside a disabled approve button.
    support = intake.test_client()
    login(support, "support@platform.example")
    page = support.get(f"/support/removal-requests/{case.id}").get_data(as_text=True)
    assert standing.label in page
    assert "disabled" in page


def test_the_corpus_is_large_enough_and_covers_both_verdicts():
    assert len(CORPUS) >= 40
    assert {verdict for _, _, verdict, _, _ in CORPUS} == {"verified", "unverified"}


def test_the_case_page_shows_the_signed_headers_and_body_and_nothing_unsigned(intake, keys):
    raw = sign(
        keys, mail(extra=["X-Note: unsigned words support must not read"], body="Please remove me.\r\n")
    )
    raw = b"Reply-To: attacker@evil.example\r\n" + raw
    case = file_and_check(intake, raw)
    assert case.verdict == "verified", case.evidence
    assert set(case.evidence["signed_headers"]) == {"from", "to", "subject", "date", "message-id"}
    support = intake.test_client()
    login(support, "support@platform.example")
    page = support.get(f"/support/removal-requests/{case.id}").get_data(as_text=True)
    assert "Please take me off the spam list" in page
    assert "Please remove me." in page
    assert "attacker@evil.example" not in page
    assert "unsigned words" not in page


def test_the_8bit_latin1_mail_reaches_support_without_replacement_characters(intake, keys):
    raw, _ = _latin1_8bit(keys)
    case = file_and_check(intake, raw)
    assert case.verdict == "verified", case.evidence
    assert case.raw_mail == raw  # the bytes as sent, never decoded on the way in
    assert "signalé" in case.body_excerpt and "René" in case.body_excerpt
    assert "\ufffd" not in case.body_excerpt


def test_a_message_id_or_signature_seen_before_does_not_verify(intake, keys):
    raw = sign(keys, mail())
    first = file_and_check(intake, raw)
    assert first.verdict == "verified"
    # The same bytes again (SendGrid retrying) file no second case.
    assert post(intake.test_client(), raw).status_code == 200
    assert len(cases()) == 1
    # The same mail relayed once more, with a trace header added: a replay.
    second = file_and_check(intake, b"Received: from relay.example\r\n" + raw)
    assert second.verdict == "unverified"
    assert "seen_before" in second.evidence["reasons"]
    assert removals.case_standing(second).label == f"Duplicate of case {first.id}"
    # The same signature with its b= re-encoded (a leading zero byte still verifies) and the
    # Message-ID header refolded: the same proof, whatever its bytes.
    value = raw.split(b"b=")[-1].split(b"\r\nFrom:")[0]
    signature = base64.b64decode(b"".join(value.split()))
    reencoded = raw.replace(value, base64.b64encode(b"\x00" + signature))
    third = file_and_check(intake, reencoded.replace(b"Message-ID: <", b"Message-ID:  <"))
    assert third.verdict == "unverified" and "seen_before" in third.evidence["reasons"], third.evidence
    # A signature that leaves Message-ID out cannot prove a request: its Message-ID could be new.
    unsigned_id = sign(keys, mail(), headers=[b"from", b"to", b"subject", b"date"])
    assert file_and_check(intake, unsigned_id).evidence["reasons"] == ["weak_signature"]


def test_a_lone_carriage_return_in_the_headers_makes_the_mail_unreadable(intake, keys):
    """dkimpy reads a lone CR as part of a line, other parsers as its end: injected MIME headers."""
    genuine = sign(keys, mail(body="Do NOT take me off the list.\r\n"))
    injected = (
        b'X-Relay: 1\rContent-Type: multipart/mixed; boundary="zz"\r\r--zz\rContent-Type: text/plain\r\r'
        b"Please take me off the spam list.\r--zz--\r\n"
    )
    case = file_and_check(intake, injected + genuine)
    assert case.verdict == "unverified" and case.evidence["reasons"] == ["unreadable"]
    assert "Please take me off" not in case.body_excerpt


def test_hostile_shapes_are_refused_before_dkim_reads_them(intake, keys):
    many_lines = mail(extra=["X-Pad: 1"] * (reading.MAX_HEADER_LINES + 1))
    assert file_and_check(intake, many_lines).evidence["reasons"] == ["headers_too_large"]
    folded = mail(extra=["X-Fold: a" + "\r\n b" * (reading.MAX_HEADER_LINES + 1)])
    assert file_and_check(intake, folded).evidence["reasons"] == ["headers_too_large"]
    absent = [f"x-absent-{index}".encode() for index in range(proof.MAX_SIGNED_NAMES)]
    wide = sign(keys, mail(), headers=[*SIGNED_HEADERS, *absent])
    case = file_and_check(intake, wide)
    assert case.evidence["reasons"] == ["weak_signature"] and "more than" in case.evidence["dkim"][0]["why"]


def test_a_mail_of_100000_parts_is_not_parsed_part_by_part(intake, keys):
    parts = b"".join(b"--b\r\nContent-Type: application/x\r\n\r\nx\r\n" for _ in range(100_000))
    raw = mail(content_type='multipart/mixed; boundary="b"', body="") + parts + b"--b--\r\n"
    case = file_and_check(intake, sign(keys, raw))
    assert case.verdict == "verified", case.evidence  # genuine, if odd: shown as what it is
    assert case.body_excerpt == "(This mail has too many parts to show.)"


def test_the_route_stores_the_raw_mail_and_answers_at_once_the_job_checks_it(intake, keys):
    raw = sign(keys, mail())
    assert post(intake.test_client(), raw).status_code == 200
    [case] = cases()
    assert case.verdict == "checking" and case.raw_mail == raw
    assert keys.lookups == []  # the route looked nothing up
    support = intake.test_client()
    login(support, "support@platform.example")
    assert "Checking" in support.get("/support/removal-requests").get_data(as_text=True)
    run_jobs(intake)
    assert cases()[0].verdict == "verified"


def test_100_signatures_on_a_5_mb_body_are_bounded(intake, keys):
    body = ("Please remove me. " * 64 + "\r\n") * (5 * 1024 * 1024 // 1154)
    raw = mail(body=body)
    # 100 forged signatures that claim the sender's own domain (one made, then copied under
    # other selectors: signing 5 MB a hundred times would only slow the test down).
    forged = sign(keys, raw, "clinic.example", key_of="evil.example")[: -len(raw)]
    raw = b"".join(forged.replace(b"s=sel;", f"s=sel{index};".encode()) for index in range(100)) + raw
    started = time.monotonic()
    assert post(intake.test_client(), raw).status_code == 200
    route_seconds = time.monotonic() - started
    assert route_seconds < 1, route_seconds  # the bound for the route: it only stores
    run_jobs(intake)
    [case] = cases()
    assert case.verdict == "unverified"
    checked = [sig for sig in case.evidence["dkim"] if sig["result"] not in ("skipped", "weak")]
    assert len(checked) == proof.MAX_CHECKED_SIGNATURES
    assert len(keys.lookups) == proof.MAX_CHECKED_SIGNATURES
    assert len(case.evidence["dkim"]) + case.evidence["more_signatures"] == 100


def test_the_check_stops_at_its_deadline(intake, keys):
    intake.config["INBOUND_CHECK_SECONDS"] = 0
    case = file_and_check(intake, sign(keys, mail()))
    assert case.verdict == "unverified"
    assert keys.lookups == []
    assert case.evidence["dkim"][0]["result"] == "skipped"


def test_a_dns_timeout_is_retried_then_the_case_is_marked(intake, keys):
    def timing_out(name: bytes, timeout: float = 5) -> bytes | None:
        raise dkim.DnsTimeoutError("timed out")

    intake.config["DKIM_DNSFUNC"] = timing_out
    assert post(intake.test_client(), sign(keys, mail())).status_code == 200
    [case] = cases()
    for _ in range(filing.MAX_CHECK_ATTEMPTS - 1):
        with pytest.raises(filing.CheckUnfinished):
            filing.check(case.id)
    assert filing.check(case.id) == "unverified"
    assert "dns_unavailable" in cases()[0].evidence["reasons"]


def test_a_lost_check_job_is_queued_again_by_the_sweep(intake, keys):
    from jobs.removals import sweep_checks
    from webapp.queue import get_queue

    assert post(intake.test_client(), sign(keys, mail())).status_code == 200
    get_queue().empty()  # Redis lost the job
    [case] = cases()
    case.received_at = utcnow() - timedelta(minutes=5)
    db.session.commit()
    import jobs

    jobs.use_app(intake)
    assert sweep_checks() == 1
    run_jobs(intake)
    assert cases()[0].verdict == "verified"


def test_a_parsed_mode_post_is_filed_as_unverifiable_and_alerts_operators(intake):
    response = intake.test_client().post(
        INBOUND,
        data={
            "from": f"Jane Doe <{ON_FILE}>",
            "to": SUPPORT,
            "subject": "Remove me",
            "text": "Please",
            "dkim": "",
        },
        content_type="multipart/form-data",
    )
    assert response.status_code == 200
    [case] = cases()
    assert case.verdict == "unverifiable"
    assert case.from_address == ON_FILE
    assert removals.case_standing(case).reason == proof.REASONS["parsed_mode"]
    [alert] = db.session.execute(sa.select(OperatorAlert)).scalars()
    assert alert.kind == "inbound_parsed_mode" and "raw, full MIME" in alert.message


def test_a_body_that_is_not_a_form_gets_400_and_oversize_gets_413(intake):
    client = intake.test_client()
    assert client.post(INBOUND, data=b"hello", content_type="text/plain").status_code == 400
    assert client.post(INBOUND, data={"other": "x"}, content_type="multipart/form-data").status_code == 400
    intake.config["INBOUND_MAX_BYTES"] = 1000
    assert post(client, b"x" * 5000).status_code == 413
    assert cases() == []


def test_unproven_cases_from_one_sender_are_rate_limited(intake, keys):
    for index in range(filing.UNPROVEN_PER_SENDER_PER_DAY + 2):
        file_and_check(intake, mail(body=f"Remove me, take {index}\r\n"))
    statuses = [case.status for case in cases()]
    assert statuses.count("pending") == filing.UNPROVEN_PER_SENDER_PER_DAY
    assert statuses.count("closed") == 2
    # A proven mail from the same sender is never held back.
    assert file_and_check(intake, sign(keys, mail())).status == "pending"


def test_a_verified_case_records_an_audit_line(intake, keys):
    case = file_and_check(intake, sign(keys, mail()))
    audit = db.session.execute(sa.select(AuditEntry).where(AuditEntry.action == "removal.received")).scalars()
    assert [(entry.subject_id, entry.detail) for entry in audit] == [(case.id, "verified")]


def test_the_queue_lists_pending_cases_oldest_first_50_a_page(intake, keys):
    start = utcnow() - timedelta(days=1)
    for index in range(55):
        db.session.add(
            RemovalRequest(
                received_at=start + timedelta(minutes=index),
                from_address=f"client{index}@clinic.example",
                fingerprint=f"{index:064d}",
                verdict="unverified",
                evidence={"reasons": ["no_aligned_dkim"]},
            )
        )
    db.session.commit()
    support = intake.test_client()
    login(support, "support@platform.example")
    first = support.get("/support/removal-requests").get_data(as_text=True)
    assert "client0@" in first and "client49@" in first and "client50@" not in first
    assert first.index("client0@") < first.index("client1@")
    second = support.get("/support/removal-requests?page=2").get_data(as_text=True)
    assert "client50@" in second and "client54@" in second
    for page in ("99999999999999999999999", "-3", "x"):
        assert support.get(f"/support/removal-requests?page={page}").status_code == 200


def test_standing_names_each_reason_a_case_cannot_be_approved(intake, keys):
    case = file_and_check(intake, sign(keys, mail()))
    assert removals.case_standing(case).label == "Not on the spam list"
    db.session.add(SpamListEntry(address=ON_FILE, reported_at=utcnow(), source="webhook"))
    db.session.commit()
    standing = removals.case_standing(case)
    assert standing.approvable and standing.label == "Approvable"
    assert "1 client file" in standing.reason
    stranger = file_and_check(intake, sign(keys, mail("stranger@clinic.example")))
    db.session.add(SpamListEntry(address="stranger@clinic.example", reported_at=utcnow(), source="webhook"))
    db.session.commit()
    assert removals.case_standing(stranger).label == "Proven, but on no client file"
    unproven = file_and_check(intake, mail(body="unsigned\r\n"))
    assert removals.case_standing(unproven).label == "Sender not proven"


def test_a_key_under_1024_bits_fails_for_its_size(intake, keys):
    case = file_and_check(intake, sign(keys, mail(), selector="short"))
    [signature] = case.evidence["dkim"]
    assert signature["result"] == "fail" and "too small" in signature["why"], signature
