"""Spam-list removal requests that arrive by email: file each mail at once, prove it in a job.

SendGrid Inbound Parse posts every mail sent to the support address. The route only stores the
raw bytes (`file_mail`) and queues `check`, which decides whether the mail proves that the client
asked, on purpose, to be taken off the spam list. A mail is *verified* only when all of this holds:

- a DKIM signature in the raw mail verifies (our own check, with dkimpy) and its d= has the same
  organisational domain as the From address (relaxed alignment, public-suffix list bundled);
- that signature covers From, To, Subject, Date and Message-ID, has no body length limit (l=),
  is not rsa-sha1, and its key is at least 1024 bits (RFC 8301);
- From, To, Cc, Subject, Date and Message-ID each appear at most once (From, To, Subject and Date
  exactly once), so what support reads is what was signed;
- the signed To or Cc names the support address: a client's mail to anyone else is no request;
- the signed Date and the signature's own t= are at most REMOVAL_MAX_AGE_DAYS old;
- neither what its signature vouches for, nor its Message-ID in a proven mail of the same sender,
  was seen in an earlier case.

Every header is read from dkimpy's own parse of the mail, so what we check and show is exactly
what DKIM verified; sizes are bounded before any parser runs.

SendGrid's own `dkim` field and any Authentication-Results header are shown to support as
information; they never verify a request. Every mail is filed, verified or not: support sees it,
and only verified ones can be approved.
"""

from __future__ import annotations

import email
import email.errors
import email.headerregistry
import email.policy
import email.utils
import hashlib
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.headerregistry import Address
from email.message import EmailMessage
from functools import lru_cache
from typing import Any

import dkim
import dkim.dnsplug
import dkim.util
import sqlalchemy as sa
from flask import current_app
from publicsuffixlist import PublicSuffixList

from webapp.extensions import db
from webapp.models import Client, RemovalRequest, utcnow
from webapp.queue import enqueue
from webapp.services import audit

log = logging.getLogger(__name__)

CHECK_JOB = "jobs.removals.check_removal_request"
FUTURE_TOLERANCE = timedelta(days=1)
EXCERPT_CHARS = 4000
# Hostile mail is bounded before anything parses it: the whole header block, each header that
# support reads or that we parse, and each signature.
MAX_HEADER_BLOCK = 256 * 1024
# dkimpy's header parse and selection grow faster than linearly with these: bound them first.
MAX_HEADER_LINES = 2000
MAX_SIGNED_NAMES = 64
# What is read of the body to show support: its start, and a bounded number of MIME parts.
MAX_BODY_BYTES = 2 * 1024 * 1024
MAX_BODY_PARTS = 200
MAX_KEY_HEADER = 2000
MAX_SIGNATURE_HEADER = 8192
# Only signatures of the sender's own domain are checked, and only this many of them.
MAX_CHECKED_SIGNATURES = 3
# After this many checks that did not finish (a killed job, DNS down), the case is unverifiable.
MAX_CHECK_ATTEMPTS = 3
# Unproven cases one sender may open in a day before further ones are closed on arrival.
UNPROVEN_PER_SENDER_PER_DAY = 5

SINGLE_HEADERS = (
    "from",
    "to",
    "cc",
    "subject",
    "date",
    "message-id",
    # How the body is read: a second copy could change what support would be shown.
    "mime-version",
    "content-type",
    "content-transfer-encoding",
)
# Message-ID too: a replay of a signature with a new, unsigned Message-ID must still be recognised.
REQUIRED_SIGNED = ("from", "to", "subject", "date", "message-id")
# What the case page shows of a verified mail: these headers when the signature covers them.
SHOWN_HEADERS = ("from", "to", "cc", "subject", "date", "message-id")
ACCEPTED_ALGORITHMS = (b"rsa-sha256", b"ed25519-sha256")

# dkimpy's DNS interface: (name: bytes, timeout=...) -> TXT record bytes or None.
DnsFunc = Callable[..., bytes | None]

# Why a mail is not verified, in the words the support case page shows.
REASONS = {
    "no_from": "The mail has no sender address.",
    "multiple_from": "The mail has more than one From header (a known spoofing trick).",
    "group_syntax": "The From header uses group syntax instead of one plain address.",
    "multiple_mailboxes": "The From header names more than one address.",
    "from_defect": "The From header is malformed (a known spoofing trick).",
    "display_name_address": "The sender's display name shows a different address than the real one.",
    "idn_address": "The address uses international or look-alike characters and is not exactly on a "
    "client file.",
    "duplicate_header": "A header that is signed appears more than once, so what you would read may not "
    "be what was signed.",
    "missing_header": "The mail lacks a To, Subject or Date header.",
    "header_too_long": "A header is far longer than any genuine mail's.",
    "headers_too_large": "The mail's headers are far larger than any genuine mail's.",
    "not_to_support": "The mail was not addressed to the support address: it was written to someone "
    "else and passed on.",
    "no_date": "The mail has no readable date.",
    "stale_date": "The mail was signed or dated more than the allowed number of days ago: it may be an "
    "old mail sent again.",
    "future_date": "The mail is dated in the future.",
    "seen_before": "The same mail (its Message-ID or signature) was already filed in an earlier case.",
    "no_aligned_dkim": "No valid signature proves that the mail came from the sender's domain.",
    "weak_signature": "The sender's domain signed it, but the signature does not cover the whole mail "
    "(a body length limit, a missing From, To, Subject or Date, or an outdated algorithm).",
    "dns_unavailable": "The sender domain's signing key could not be fetched.",
    "check_failed": "The check could not be completed.",
    "parsed_mode": "Cannot be verified: the support mailbox is not sending the raw message.",
    "unreadable": "The mail cannot be read.",
}

# Reasons that leave no single sender address to check signatures against.
UNREADABLE_SENDER = {"no_from", "multiple_from", "group_syntax", "multiple_mailboxes", "from_defect"}

# SendGrid's dkim field is not JSON: "{@example.com : pass}", several entries, or "none".
_RECEIVER_RESULT = re.compile(r"@([A-Za-z0-9_.-]{1,253})\s{0,5}:\s{0,5}([A-Za-z]{1,20})")
_DISPLAY_NAME_SEPARATORS = re.compile(r"[\s<>\"'(),;:]+")
_DKIM_LOG = logging.getLogger("dkimpy")


class CheckUnfinished(RuntimeError):
    """The check could not finish now (DNS timed out); it is tried again later."""


@dataclass
class Verdict:
    """What a mail proves about its sender, and what support may read of it."""

    from_address: str = ""
    from_domain: str = ""
    reasons: list[str] = field(default_factory=list)
    signatures: list[dict[str, Any]] = field(default_factory=list)
    signed_headers: dict[str, str] = field(default_factory=dict)
    other_signed: list[str] = field(default_factory=list)
    subject: str = ""
    message_id: str = ""
    date: datetime | None = None
    signed_at: datetime | None = None
    body: str = ""
    proof_key: str = ""

    @property
    def verified(self) -> bool:
        """Return whether nothing speaks against the mail and a signature proves it."""
        return not self.reasons and bool(self.proof_key)


def file_mail(raw: bytes, *, receiver_dkim: str = "", spf: str = "") -> tuple[RemovalRequest, bool]:
    """Store one inbound mail as a case awaiting its check; return it and whether it is new.

    The same bytes delivered twice file one case. Nothing is parsed here: the check runs in a job.
    """
    fingerprint = hashlib.sha256(raw).hexdigest()
    case = _by_fingerprint(fingerprint)
    if case is not None:
        return case, False
    case = RemovalRequest(
        received_at=utcnow(),
        from_address="",
        raw_mail=raw,
        fingerprint=fingerprint,
        verdict="checking",
        evidence={"receiver_dkim": _clean(receiver_dkim, 500), "spf": _clean(spf, 500)},
    )
    case, created = _add_once(case)
    if created:
        enqueue_check(case.id)
    return case, created


def enqueue_check(case_id: int) -> bool:
    """Queue the check of one filed mail, stopped by RQ if it overruns its deadline."""
    timeout = current_app.config["INBOUND_CHECK_SECONDS"] + 30
    return enqueue(CHECK_JOB, case_id, job_id=f"removal-check-{case_id}", timeout=timeout)


def file_parsed_mail(fields: dict[str, str]) -> tuple[RemovalRequest, bool]:
    """File a mail that Inbound Parse sent without its raw MIME, as unverifiable, and alert."""
    from webapp.services.sending import alert_operators

    claimed = fields.get("from", "")[:MAX_KEY_HEADER]
    address = ""
    try:
        parsed = email.headerregistry.HeaderRegistry()("from", claimed)
        if len(parsed.addresses) == 1:
            address = parsed.addresses[0].addr_spec.lower()
    except Exception:  # an unreadable claim is shown as written
        address = ""
    text = "\x1f".join(fields.get(name, "") for name in ("from", "to", "subject", "text", "headers"))
    fingerprint = hashlib.sha256(("parsed\x1f" + text).encode("utf-8", "replace")).hexdigest()
    case = _by_fingerprint(fingerprint)
    if case is not None:
        return case, False
    case = RemovalRequest(
        received_at=utcnow(),
        from_address=_clean(address or claimed, 320),
        subject=_clean(fields.get("subject", ""), 300),
        body_excerpt=_clean(fields.get("text", "").strip(), EXCERPT_CHARS),
        fingerprint=fingerprint,
        verdict="unverifiable",
        checked_at=utcnow(),
        evidence={
            "reasons": ["parsed_mode"],
            "receiver_dkim": _clean(fields.get("dkim", ""), 500),
            "spf": _clean(fields.get("SPF", ""), 500),
        },
    )
    case, created = _add_once(case)
    if created:
        alert_operators(
            "inbound_parsed_mode",
            "A removal request arrived without its raw message, so nobody can verify it. In SendGrid's "
            "Inbound Parse settings for the support address, turn on “POST the raw, full MIME message”.",
        )
        db.session.commit()
    return case, created


def check(case_id: int, *, now: datetime | None = None, dnsfunc: DnsFunc | None = None) -> str:
    """Decide whether a filed mail is a verified request; return the case's verdict.

    Idempotent: a case already decided is left alone. Raises CheckUnfinished when the signing key
    could not be fetched, so the job is tried again (at most MAX_CHECK_ATTEMPTS times).
    """
    config = current_app.config
    claimed = db.session.execute(
        sa.update(RemovalRequest)
        .where(RemovalRequest.id == case_id, RemovalRequest.verdict == "checking")
        .values(check_attempts=RemovalRequest.check_attempts + 1)
        .returning(RemovalRequest.check_attempts)
        .execution_options(synchronize_session=False)
    ).scalar()
    db.session.commit()
    case = db.session.get(RemovalRequest, case_id)
    if case is None or claimed is None:
        return case.verdict if case else "missing"
    if claimed > MAX_CHECK_ATTEMPTS:
        return _give_up(case, "check_failed")
    now = now or utcnow()
    found = judge(
        case.raw_mail or b"",
        support_address=config["SUPPORT_ADDRESS"],
        now=now,
        max_age=timedelta(days=config["REMOVAL_MAX_AGE_DAYS"]),
        dnsfunc=dnsfunc or configured_dns(config),
        dns_timeout=config["DKIM_DNS_TIMEOUT_SECONDS"],
        deadline=time.monotonic() + config["INBOUND_CHECK_SECONDS"],
    )
    if "dns_unavailable" in found.reasons and claimed < MAX_CHECK_ATTEMPTS:
        raise CheckUnfinished(f"case {case_id}: a DKIM key lookup timed out")
    earlier = _seen_before(case, found)
    if earlier is not None:
        found.reasons.append("seen_before")
    if "idn_address" in found.reasons and _on_file(found.from_address):
        found.reasons.remove("idn_address")
    _record(case, found, earlier, now)
    db.session.commit()
    return case.verdict


def judge(
    raw: bytes,
    *,
    support_address: str,
    now: datetime,
    max_age: timedelta,
    dnsfunc: DnsFunc,
    dns_timeout: float = 5,
    deadline: float | None = None,
) -> Verdict:
    """Judge what a raw mail proves (no database); bounded in time by `deadline` (monotonic)."""
    found = Verdict()
    header_end = _header_end(raw)
    if header_end > MAX_HEADER_BLOCK or raw.count(b"\n", 0, max(header_end, 0)) > MAX_HEADER_LINES:
        found.reasons.append("headers_too_large")
        return found
    if header_end < 0 or b"\x00" in raw[:header_end] or re.search(rb"\r(?!\n)", raw[:header_end]):
        # A lone CR ends a line for some parsers and not for others: what DKIM verified would
        # not be what support reads.
        found.reasons.append("unreadable")
        return found
    try:
        # Every header is read from dkimpy's own parse: what we check is exactly what it verifies.
        checker = dkim.DKIM(raw, logger=_DKIM_LOG, minkey=1024, timeout=dns_timeout)
    except Exception as error:  # a mail DKIM cannot split cannot be proven, nor safely shown
        log.info("DKIM cannot read the message: %s", error)
        found.reasons.append("unreadable")
        return found
    headers = MailHeaders(checker.headers)
    found.subject = _clean(_decoded(headers.first("subject")), 300)
    found.message_id = _clean(headers.first("message-id"), 300)
    if any(len(value) > MAX_KEY_HEADER for name in SINGLE_HEADERS for value in headers.all(name)):
        found.reasons.append("header_too_long")
        found.from_address = _clean(headers.first("from"), 320)
        return found
    found.from_address, sender_reasons = sender_address(headers.all("from"))
    found.reasons += sender_reasons
    if not set(sender_reasons) & UNREADABLE_SENDER:
        found.from_domain = found.from_address.rpartition("@")[2]
    if any(headers.count(name) > 1 for name in SINGLE_HEADERS if name != "from"):
        found.reasons.append("duplicate_header")
    if any(headers.count(name) == 0 for name in ("to", "subject", "date")):
        found.reasons.append("missing_header")
    found.date, date_reason = _age_reason(_date(headers.all("date")), now, max_age)
    if date_reason:
        found.reasons.append(date_reason)
    proof = _check_signatures(checker, found, now, max_age, dnsfunc, dns_timeout, deadline)
    if proof is None:
        if not found.reasons or found.from_domain:
            found.reasons.append(_no_proof_reason(found.signatures))
    else:
        signed_names = proof["signed"]
        # Keyed on what the signature vouches for, not on its b= bytes (an RSA signature can be
        # re-encoded and still verify): the same signed mail is the same proof.
        vouched = [proof["d"], proof["bh"], *(headers.first(name) for name in REQUIRED_SIGNED)]
        found.proof_key = hashlib.sha256("\x1f".join(vouched).encode("utf-8", "surrogateescape")).hexdigest()
        found.signed_headers = {
            name: _clean(_decoded(headers.first(name)), MAX_KEY_HEADER)
            for name in SHOWN_HEADERS
            if name in signed_names and headers.count(name)
        }
        if "from" in found.signed_headers:  # the proven address only: a comment can look like another
            found.signed_headers["from"] = found.from_address
        found.other_signed = sorted(set(signed_names) - set(SHOWN_HEADERS))
        recipients = headers.all("to") + (headers.all("cc") if "cc" in signed_names else [])
        if not _names_address(recipients, support_address):
            found.reasons.append("not_to_support")
    found.body = body_text(headers, checker.body)
    return found


class MailHeaders:
    """A mail's headers as dkimpy split them: (name, value) byte pairs in their order."""

    def __init__(self, pairs: list[list[bytes]]) -> None:
        self.pairs = pairs
        self.values: dict[str, list[str]] = {}
        for name, value in pairs:
            text = value.decode("utf-8", "surrogateescape")
            # Unfold: a line break followed by white space is part of the same header.
            self.values.setdefault(name.decode("ascii", "replace").lower(), []).append(
                " ".join(text.split("\r\n")).strip()
            )

    def all(self, name: str) -> list[str]:
        """Return every value of a header, unfolded, in order."""
        return self.values.get(name, [])

    def first(self, name: str) -> str:
        """Return the first value of a header, or ""."""
        values = self.all(name)
        return values[0] if values else ""

    def count(self, name: str) -> int:
        """Return how many times a header appears."""
        return len(self.all(name))


def sender_address(written: list[str]) -> tuple[str, list[str]]:
    """Return the From addr-spec, lower-cased, and why it cannot be trusted (empty: it can)."""
    if not written:
        return "", ["no_from"]
    shown = _clean(", ".join(" ".join(value.split()) for value in written), 320)
    if len(written) > 1:
        return shown, ["multiple_from"]
    try:
        header = email.policy.default.header_factory("from", written[0])
        if any(group.display_name is not None for group in header.groups):
            return shown, ["group_syntax"]
        if len(header.addresses) != 1:
            return shown, ["multiple_mailboxes" if header.addresses else "no_from"]
        # Obsolete syntax ("Jane Q. Doe <...>") is common in genuine mail; anything else is not.
        if any(not isinstance(defect, email.errors.ObsoleteHeaderDefect) for defect in header.defects):
            return shown, ["from_defect"]
        mailbox = header.addresses[0]
        if not mailbox.username or not mailbox.domain:
            return shown, ["from_defect"]
        address = mailbox.addr_spec.lower()
    except Exception as error:  # a hostile header must not stop the intake
        log.info("unreadable From header: %s", error)
        return shown, ["from_defect"]
    reasons = []
    if _addresses_in_text(mailbox.display_name) - {address}:
        reasons.append("display_name_address")
    if not address.isascii() or any(label.startswith("xn--") for label in mailbox.domain.lower().split(".")):
        reasons.append("idn_address")
    return _clean(address, 320), reasons


def aligned(signing_domain: str, from_domain: str) -> bool:
    """Return whether d= and the From domain share an organisational domain (never a public suffix)."""
    signer = organisational_domain(signing_domain)
    return signer is not None and signer == organisational_domain(from_domain)


def organisational_domain(domain: str) -> str | None:
    """Return the registrable domain ("clinic.example" for "mail.clinic.example"), or None."""
    name = domain.lower().rstrip(".")
    if not name or len(name) > 253:
        return None
    return _public_suffixes().privatesuffix(name)


def parse_receiver_dkim(value: str) -> list[dict[str, str]]:
    """Read SendGrid's dkim field ("{@example.com : pass}", maybe several) into (d, result) pairs."""
    return [
        {"d": domain.lower().rstrip("."), "result": result.lower()}
        for domain, result in _RECEIVER_RESULT.findall(value[:2000])
    ]


def body_text(headers: MailHeaders, body: bytes) -> str:
    """Return the plain-text part of the signed body (never HTML), decoded by its own charset.

    Only the body's own MIME headers are given to the parser, rebuilt from DKIM's parse, and the
    body is bounded in size and parts: a hostile mail cannot make this slow.
    """
    body = body[:MAX_BODY_BYTES]
    if body.count(b"\n--") > MAX_BODY_PARTS:
        return "(This mail has too many parts to show.)"
    content = [
        f"{label}: {headers.first(name)}\r\n".encode("utf-8", "surrogateescape")
        for name, label in (
            ("mime-version", "MIME-Version"),
            ("content-type", "Content-Type"),
            ("content-transfer-encoding", "Content-Transfer-Encoding"),
        )
        if headers.count(name)
    ]
    try:
        message = email.message_from_bytes(b"".join(content) + b"\r\n" + body, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        part = message.get_body(preferencelist=("plain",))
        text = part.get_content() if part is not None else ""
    except Exception:  # an undecodable body still files the case
        text = ""
    return _clean(str(text).strip(), EXCERPT_CHARS)


def configured_dns(config: dict[str, Any]) -> DnsFunc:
    """Return the DKIM key lookup: a test's, the sandbox demo's (webapp/demo), else real DNS."""
    if config.get("DKIM_DNSFUNC"):
        return config["DKIM_DNSFUNC"]
    return current_app.extensions.get("dkim_dns", dkim.dnsplug.get_txt)


def due_checks(now: datetime, after: timedelta = timedelta(minutes=2)) -> list[int]:
    """Return cases still awaiting their check well after arrival (a lost or killed job)."""
    return list(
        db.session.execute(
            sa.select(RemovalRequest.id)
            .where(RemovalRequest.verdict == "checking", RemovalRequest.received_at <= now - after)
            .order_by(RemovalRequest.id)
            .limit(500)
        ).scalars()
    )


def _check_signatures(
    checker: dkim.DKIM,
    found: Verdict,
    now: datetime,
    max_age: timedelta,
    dnsfunc: DnsFunc,
    dns_timeout: float,
    deadline: float | None,
) -> dict[str, Any] | None:
    """Check the signatures of the sender's domain; return the first that proves the mail."""
    values = [value for name, value in checker.headers if name.lower() == b"dkim-signature"]
    checked = 0
    for index, value in enumerate(values):
        tags = _signature_tags(value)
        signer = _text(tags.get(b"d", b"")).lower().rstrip(".")
        entry = {
            "d": _clean(signer, 255),
            "s": _clean(_text(tags.get(b"s", b"")), 255),
            "result": "",
            "why": "",
        }
        found.signatures.append(entry)
        if not found.from_domain or not aligned(signer, found.from_domain):
            entry.update(result="skipped", why="not the sender's domain")
            continue
        if checked >= MAX_CHECKED_SIGNATURES or (deadline is not None and time.monotonic() > deadline):
            entry.update(result="skipped", why="too many signatures to check")
            continue
        weakness = _weakness(tags, now, max_age)
        if weakness:
            entry.update(result="weak", why=weakness)
            continue
        checked += 1
        entry.update(_verify(checker, index, dnsfunc, dns_timeout, deadline))
        if entry["result"] == "pass":
            signed = [_text(name).strip().lower() for name in tags.get(b"h", b"").split(b":")]
            found.signed_at = _signed_at(tags)
            return {"signed": signed, "d": signer, "bh": re.sub(r"\s+", "", _text(tags.get(b"bh", b"")))}
    return None


def _weakness(tags: dict[bytes, bytes], now: datetime, max_age: timedelta) -> str:
    """Return why a signature cannot prove a request even if it verifies ("" if it can)."""
    if tags.get(b"a", b"").strip() not in ACCEPTED_ALGORITHMS:
        return f"algorithm {_text(tags.get(b'a', b'')).strip() or 'missing'} is not accepted"
    if b"l" in tags:
        return "it signs only the first part of the body (l=)"
    names = tags.get(b"h", b"").split(b":")
    if len(names) > MAX_SIGNED_NAMES:
        return f"it lists more than {MAX_SIGNED_NAMES} headers"
    signed = {_text(name).strip().lower() for name in names}
    missing = [name for name in REQUIRED_SIGNED if name not in signed]
    if missing:
        return "it does not cover " + ", ".join(missing)
    signed_at = _signed_at(tags)
    if signed_at is not None and _age_reason(signed_at, now, max_age)[1]:
        return "it was made outside the allowed time window (t=)"
    return ""


def _verify(
    checker: dkim.DKIM, index: int, dnsfunc: DnsFunc, dns_timeout: float, deadline: float | None
) -> dict[str, str]:
    """Verify one signature; a DNS timeout is a temporary error, anything else a failure."""
    timed_out = False

    def lookup(name: bytes, timeout: float = dns_timeout) -> bytes | None:
        nonlocal timed_out
        left = dns_timeout if deadline is None else max(0.1, min(dns_timeout, deadline - time.monotonic()))
        try:
            return dnsfunc(name, timeout=left)
        except dkim.DnsTimeoutError:
            timed_out = True
            raise

    try:
        passed = bool(checker.verify(idx=index, dnsfunc=lookup))
        why = "" if passed else "the signature does not match the mail"
    except Exception as error:  # a hostile signature must not stop the intake
        passed, why = False, f"{type(error).__name__}: {error}"
    if timed_out:
        return {"result": "temperror", "why": "the signing key could not be fetched (DNS timed out)"}
    return {"result": "pass" if passed else "fail", "why": _clean(why, 300)}


def _no_proof_reason(signatures: list[dict[str, Any]]) -> str:
    results = {sig["result"] for sig in signatures}
    if "temperror" in results:
        return "dns_unavailable"
    if "weak" in results and "fail" not in results:
        return "weak_signature"
    return "no_aligned_dkim"


def _signature_tags(value: bytes) -> dict[bytes, bytes]:
    if len(value) > MAX_SIGNATURE_HEADER:
        return {}
    try:
        return dkim.util.parse_tag_value(value)
    except Exception:  # unreadable tags: nothing to check
        return {}


def _signed_at(tags: dict[bytes, bytes]) -> datetime | None:
    value = tags.get(b"t", b"").strip()
    if not value.isdigit() or len(value) > 12:
        return None
    return datetime.fromtimestamp(int(value), UTC)


def _age_reason(moment: datetime | None, now: datetime, max_age: timedelta) -> tuple[datetime | None, str]:
    """Return the moment and why it is too old or too far ahead ("" when it is fine)."""
    if moment is None:
        return None, "no_date"
    if now - moment > max_age:
        return moment, "stale_date"
    if moment - now > FUTURE_TOLERANCE:
        return moment, "future_date"
    return moment, ""


def _date(values: list[str]) -> datetime | None:
    if len(values) != 1:
        return None
    try:
        moment = email.utils.parsedate_to_datetime(values[0])
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:  # "-0000": the sender did not say; read it as UTC
        moment = moment.replace(tzinfo=UTC)
    return moment


def _names_address(values: list[str], wanted: str) -> bool:
    """Return whether any of these To/Cc values names the address (by addr-spec, any case)."""
    target = wanted.strip().lower()
    for value in values:
        try:
            header = email.policy.default.header_factory("to", value)
            mailboxes: tuple[Address, ...] = header.addresses
        except Exception:  # an unreadable recipient list names nobody
            continue
        if any(mailbox.addr_spec.lower() == target for mailbox in mailboxes):
            return True
    return False


def _addresses_in_text(text: str) -> set[str]:
    """Return address-like words of a display name (split first: linear on hostile input)."""
    return {
        word.lower()
        for word in _DISPLAY_NAME_SEPARATORS.split(text)
        if word.count("@") == 1 and not word.startswith("@") and not word.endswith("@")
    }


def _header_end(raw: bytes) -> int:
    """Return where the header block ends (-1 when there is no body separator nor any header)."""
    for separator in (b"\r\n\r\n", b"\n\n"):
        found = raw.find(separator, 0, MAX_HEADER_BLOCK + 4)
        if found >= 0:
            return found + len(separator)
    if len(raw) > MAX_HEADER_BLOCK:
        return MAX_HEADER_BLOCK + 1
    return len(raw) if raw.strip() else -1


def _decoded(value: object) -> str:
    """Return a header as a person reads it (encoded words decoded), bounded."""
    text = str(value)[:MAX_KEY_HEADER]
    try:
        return str(email.policy.default.header_factory("subject", text))
    except Exception:  # undecodable: show it as written
        return text


def _record(case: RemovalRequest, found: Verdict, earlier: RemovalRequest | None, now: datetime) -> None:
    """Write the verdict and what support may read into the case."""
    case.from_address = _clean(found.from_address, 320)
    case.subject = found.signed_headers.get("subject", found.subject)[:300]
    case.message_id = found.message_id
    case.proof_key = found.proof_key or None
    case.body_excerpt = found.body
    case.verdict = "verified" if found.verified else "unverified"
    case.checked_at = now
    case.evidence = {
        **(case.evidence or {}),
        "reasons": list(dict.fromkeys(found.reasons)),
        "from_domain": _clean(found.from_domain, 255),
        "date": found.date.isoformat() if found.date else "",
        "signed_at": found.signed_at.isoformat() if found.signed_at else "",
        "dkim": found.signatures[:20],
        "more_signatures": max(0, len(found.signatures) - 20),
        "signed_headers": found.signed_headers,
        "other_signed": found.other_signed[:30],
        "seen_in_case": earlier.id if earlier is not None else None,
        "receiver_dkim_aligned_pass": [
            entry["d"]
            for entry in parse_receiver_dkim((case.evidence or {}).get("receiver_dkim", ""))
            if entry["result"] == "pass" and found.from_domain and aligned(entry["d"], found.from_domain)
        ],
    }
    if case.verdict == "unverified" and _too_many_unproven(case, now):
        case.status = "closed"
        case.decided_at = now
        case.decision_note = "Closed on arrival: too many unproven requests from this sender today."
    audit.record(
        "removal.received",
        None,
        clinic_id=None,
        subject_type="removal_request",
        subject_id=case.id,
        detail=case.verdict,
    )


def _give_up(case: RemovalRequest, reason: str) -> str:
    from webapp.services.sending import alert_operators

    case.verdict = "unverifiable"
    case.checked_at = utcnow()
    case.evidence = {**(case.evidence or {}), "reasons": [reason]}
    alert_operators(
        "removal_check_failed",
        f"Removal request {case.id} could not be checked after {MAX_CHECK_ATTEMPTS} tries; "
        "ask the client to send it again.",
    )
    db.session.commit()
    return case.verdict


def _seen_before(case: RemovalRequest, found: Verdict) -> RemovalRequest | None:
    """Return an earlier case with the same Message-ID or the same proving signature."""
    same = []
    if found.message_id:
        # Only a proven mail of the same sender claims its Message-ID: unproven mail, or another
        # sender's, naming it first must not make the client's own request a duplicate.
        same.append(
            sa.and_(
                RemovalRequest.message_id == found.message_id,
                RemovalRequest.proof_key.is_not(None),
                RemovalRequest.from_address == found.from_address,
            )
        )
    if found.proof_key:
        same.append(RemovalRequest.proof_key == found.proof_key)
    if not same:
        return None
    return db.session.execute(
        sa.select(RemovalRequest)
        .where(sa.or_(*same), RemovalRequest.id < case.id)
        .order_by(RemovalRequest.id)
        .limit(1)
    ).scalar_one_or_none()


def _too_many_unproven(case: RemovalRequest, now: datetime) -> bool:
    if not case.from_address:
        return False
    count = db.session.execute(
        sa.select(sa.func.count(RemovalRequest.id)).where(
            RemovalRequest.from_address == case.from_address,
            RemovalRequest.verdict == "unverified",
            RemovalRequest.received_at >= now - timedelta(days=1),
            RemovalRequest.id != case.id,
        )
    ).scalar()
    return (count or 0) >= UNPROVEN_PER_SENDER_PER_DAY


def _add_once(case: RemovalRequest) -> tuple[RemovalRequest, bool]:
    """Insert a case; when the same mail raced in at once, return the other delivery's case."""
    db.session.add(case)
    try:
        db.session.commit()
    except sa.exc.IntegrityError:
        db.session.rollback()
        existing = _by_fingerprint(case.fingerprint)
        if existing is None:
            raise
        return existing, False
    return case, True


def _by_fingerprint(key: str) -> RemovalRequest | None:
    return db.session.execute(
        sa.select(RemovalRequest).where(RemovalRequest.fingerprint == key)
    ).scalar_one_or_none()


def _on_file(address: str) -> bool:
    """Return whether a client file holds exactly this address."""
    return (
        db.session.execute(
            sa.select(Client.id).where(sa.func.lower(Client.email) == address).limit(1)
        ).first()
        is not None
    )


@lru_cache(maxsize=1)
def _public_suffixes() -> PublicSuffixList:
    """The bundled public-suffix list (no network), loaded once per process."""
    return PublicSuffixList()


def _text(value: bytes) -> str:
    return value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)


def _clean(text: str, limit: int) -> str:
    """Make attacker-supplied text storable anywhere: no NULs, no lone surrogates, bounded."""
    text = str(text)[: limit * 2]
    try:  # raw 8-bit header bytes come back from the parser as surrogate escapes
        data = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        data = text.encode("utf-8", "replace")
    return data.decode("utf-8", "replace").replace("\x00", "")[:limit]
