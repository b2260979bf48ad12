"""Spam-list removal requests that arrive by email: judge the sender, file each mail once.

SendGrid Inbound Parse posts every mail sent to the support address, raw MIME included. Anyone can
write any From header, so a mail counts as *verified* only when it is authenticated for its From
domain: a DKIM signature that verifies (checked here with dkimpy, every signature, not only the
topmost) and whose d= is aligned with that domain, or an aligned pass in the receiving server's own
DKIM results. Authentication-Results headers inside the mail are ignored: anyone can write them.
Every other mail is still filed, as *unverified*: support sees it, and nobody can approve it.
"""

from __future__ import annotations

import email
import email.errors
import email.policy
import hashlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

import dkim
import dkim.dnsplug
import dkim.util
import sqlalchemy as sa
from flask import current_app

from webapp.extensions import db
from webapp.models import Client, RemovalRequest, utcnow
from webapp.services import audit

log = logging.getLogger(__name__)

# A genuine request older than this may be an old signed mail sent again (DKIM replay).
REPLAY_WINDOW = timedelta(days=7)
FUTURE_TOLERANCE = timedelta(days=1)
EXCERPT_CHARS = 2000

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
    "no_date": "The mail has no readable date.",
    "stale_date": "The mail is dated more than 7 days ago: it may be an old mail sent again.",
    "future_date": "The mail is dated in the future.",
    "no_aligned_dkim": "No signature proves that the mail came from the sender's domain.",
}

# Reasons that leave no single sender address to check signatures against.
UNREADABLE_SENDER = {"no_from", "multiple_from", "group_syntax", "multiple_mailboxes", "from_defect"}

_ADDRESS_IN_TEXT = re.compile(r"[^\s<>\"'(),;:@]+@[^\s<>\"'(),;:@]+")
# SendGrid's dkim field is not JSON: "{@example.com : pass}", several entries, or "none".
_RECEIVER_RESULT = re.compile(r"@([A-Za-z0-9_.-]+)\s*:\s*([A-Za-z]+)")
_DKIM_LOG = logging.getLogger("dkimpy")


class InboundUnavailable(RuntimeError):
    """The mail cannot be judged or stored right now; SendGrid must try again later (5xx)."""


@dataclass
class Assessment:
    """What a mail proves about its sender."""

    from_address: str
    from_domain: str = ""
    reasons: list[str] = field(default_factory=list)
    signatures: list[dict[str, Any]] = field(default_factory=list)
    receiver: list[dict[str, str]] = field(default_factory=list)
    verified_by: str = ""
    date: datetime | None = None
    fingerprint: str = ""

    @property
    def verified(self) -> bool:
        """Return whether nothing speaks against the mail and a signature proves its domain."""
        return not self.reasons and bool(self.verified_by)


def receive(
    raw: bytes,
    *,
    receiver_dkim: str = "",
    spf: str = "",
    dnsfunc: DnsFunc | None = None,
    now: datetime | None = None,
) -> tuple[RemovalRequest, bool]:
    """File one inbound mail as a removal case, once; return the case and whether it is new.

    Raises InboundUnavailable for failures worth a retry (DNS timeout, database error).
    """
    now = now or utcnow()
    message = read_message(raw)
    found = assess(message, raw, receiver_dkim, now, dnsfunc or _configured_dns())
    try:
        existing = _by_fingerprint(found.fingerprint)
        if existing is not None:
            return existing, False
        if "idn_address" in found.reasons and _on_file(found.from_address):
            found.reasons.remove("idn_address")
        case = RemovalRequest(
            received_at=now,
            from_address=_clean(found.from_address, 320),
            subject=_clean(str(_header(message, "Subject")), 300),
            body_excerpt=body_excerpt(message),
            message_id=_clean(str(_header(message, "Message-ID")), 300),
            fingerprint=found.fingerprint,
            verdict="verified" if found.verified else "unverified",
            evidence=_evidence(found, receiver_dkim, spf),
        )
        db.session.add(case)
        try:
            db.session.flush()
        except sa.exc.IntegrityError:
            # The same mail, delivered twice at once: the other delivery filed it.
            db.session.rollback()
            duplicate = _by_fingerprint(found.fingerprint)
            if duplicate is None:
                raise
            return duplicate, False
        audit.record(
            "removal.received",
            None,
            clinic_id=None,
            subject_type="removal_request",
            subject_id=case.id,
            detail=case.verdict,
        )
        db.session.commit()
    except sa.exc.SQLAlchemyError as error:
        db.session.rollback()
        raise InboundUnavailable(f"could not store the removal request: {error}") from error
    return case, True


def read_message(raw: bytes) -> EmailMessage:
    """Parse raw MIME with the modern policy; raise ValueError when it is not a mail at all."""
    try:
        message = email.message_from_bytes(raw, policy=email.policy.default)
    except Exception as error:  # the parser is lenient; what it rejects can never be read
        raise ValueError(f"unreadable mail: {error}") from error
    if not message.keys():
        raise ValueError("the mail has no headers")
    return message


def assess(
    message: EmailMessage, raw: bytes, receiver_dkim: str, now: datetime, dnsfunc: DnsFunc
) -> Assessment:
    """Judge what the mail proves about its sender (no database)."""
    address, reasons = sender_address(message)
    found = Assessment(from_address=address, reasons=reasons)
    if not set(reasons) & UNREADABLE_SENDER:
        found.from_domain = address.rpartition("@")[2]
    found.date, date_reason = _date(message, now)
    if date_reason:
        found.reasons.append(date_reason)
    found.signatures = check_signatures(raw, found.from_domain, dnsfunc)
    found.receiver = [
        {**entry, "aligned": bool(found.from_domain) and aligned(entry["d"], found.from_domain)}
        for entry in parse_receiver_dkim(receiver_dkim)
    ]
    if any(sig["result"] == "pass" and sig["aligned"] for sig in found.signatures):
        found.verified_by = "dkim"
    elif any(entry["result"] == "pass" and entry["aligned"] for entry in found.receiver):
        found.verified_by = "receiver"
    elif not found.reasons and any(sig["result"] == "temperror" for sig in found.signatures):
        raise InboundUnavailable("a DKIM key lookup timed out")
    elif found.from_domain:  # (with no single sender, the reason is already recorded)
        found.reasons.append("no_aligned_dkim")
    found.fingerprint = fingerprint(found, message, raw)
    return found


def sender_address(message: EmailMessage) -> tuple[str, list[str]]:
    """Return the From addr-spec, lower-cased, and why it cannot be trusted (empty: it can)."""
    try:
        headers = message.get_all("From") or []
        if not headers:
            return "", ["no_from"]
        # An untrustworthy From is kept as written, so it cannot pass for a clean address.
        written = [value for name, value in message.raw_items() if name.lower() == "from"]
        shown = _clean(", ".join(" ".join(value.split()) for value in written), 320)
        if len(headers) > 1:
            return shown, ["multiple_from"]
        header = headers[0]
        if any(group.display_name is not None for group in header.groups):
            return shown, ["group_syntax"]
        if len(header.addresses) != 1:
            return shown, ["multiple_mailboxes" if header.addresses else "no_from"]
        # Obsolete syntax ("Jane Q. Doe <...>") is common in genuine mail; anything else is not.
        if any(not isinstance(defect, email.errors.ObsoleteHeaderDefect) for defect in header.defects):
            return shown, ["from_defect"]
        mailbox = header.addresses[0]
        address = mailbox.addr_spec.lower()
        if not mailbox.username or not mailbox.domain:
            return shown, ["from_defect"]
    except Exception as error:  # a hostile header must not stop the intake
        log.info("unreadable From header: %s", error)
        return "", ["from_defect"]
    reasons = []
    shown_addresses = {found.lower() for found in _ADDRESS_IN_TEXT.findall(mailbox.display_name)}
    if shown_addresses - {address}:
        reasons.append("display_name_address")
    if not address.isascii() or any(label.startswith("xn--") for label in mailbox.domain.lower().split(".")):
        reasons.append("idn_address")
    return _clean(address, 320), reasons


def aligned(signing_domain: str, from_domain: str) -> bool:
    """Return whether a signing domain (d=) is the From domain or a parent of it, never a bare TLD."""
    signer = signing_domain.lower().rstrip(".")
    sender = from_domain.lower().rstrip(".")
    return "." in signer and (sender == signer or sender.endswith("." + signer))


def check_signatures(raw: bytes, from_domain: str, dnsfunc: DnsFunc) -> list[dict[str, Any]]:
    """Verify every DKIM signature of the mail; return d=, s=, b= and the result of each."""
    timed_out: list[bytes] = []

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        try:
            return dnsfunc(name, timeout=timeout)
        except dkim.DnsTimeoutError:
            timed_out.append(name)
            raise

    try:
        checker = dkim.DKIM(raw, logger=_DKIM_LOG)
    except Exception as error:  # a message dkimpy cannot split has no usable signature
        log.info("DKIM cannot read the message: %s", error)
        return []
    values = [value for name, value in checker.headers if name.lower() == b"dkim-signature"]
    results = []
    for index, value in enumerate(values):
        try:
            tags = dkim.util.parse_tag_value(value)
        except Exception:  # unreadable tags: dkimpy's verify reports the failure
            tags = {}
        signer = _text(tags.get(b"d", b"")).lower().rstrip(".")
        before = len(timed_out)
        error_text = ""
        try:
            passed = bool(checker.verify(idx=index, dnsfunc=lookup))
        except Exception as error:  # a hostile signature must not stop the intake
            passed, error_text = False, f"{type(error).__name__}: {error}"
        result = "pass" if passed else ("temperror" if len(timed_out) > before else "fail")
        results.append(
            {
                "d": _clean(signer, 255),
                "s": _clean(_text(tags.get(b"s", b"")), 255),
                "result": result,
                "aligned": bool(from_domain) and aligned(signer, from_domain),
                "error": _clean(error_text, 300),
                "b": re.sub(r"\s+", "", _text(tags.get(b"b", b""))),
            }
        )
    return results


def parse_receiver_dkim(value: str) -> list[dict[str, str]]:
    """Read SendGrid's dkim field ("{@example.com : pass}", maybe several) into (d, result) pairs."""
    return [
        {"d": domain.lower().rstrip("."), "result": result.lower()}
        for domain, result in _RECEIVER_RESULT.findall(value[:2000])
    ]


def fingerprint(found: Assessment, message: EmailMessage, raw: bytes) -> str:
    """Return the dedupe key: the sender and the proving signatures, else the whole mail.

    Keyed on the signature that proves the mail, a replay of that mail with its unsigned headers
    changed still files no second case; an unproven mail is keyed on its exact bytes.
    """
    receiver_domains = {entry["d"] for entry in found.receiver if entry["result"] == "pass"}
    proving = sorted(
        sig["b"]
        for sig in found.signatures
        if sig["aligned"] and sig["b"] and (sig["result"] == "pass" or sig["d"] in receiver_domains)
    )
    if found.verified_by and proving:
        parts = [found.from_address, *proving]
    else:
        message_id = str(_header(message, "Message-ID"))
        parts = [found.from_address, message_id, hashlib.sha256(raw).hexdigest()]
    return hashlib.sha256("\x1f".join(parts).encode("utf-8", "replace")).hexdigest()


def body_excerpt(message: EmailMessage) -> str:
    """Return the start of the plain-text part (never HTML), for support to read."""
    try:
        part = message.get_body(preferencelist=("plain",))
        text = part.get_content() if part is not None else ""
    except Exception:  # an undecodable body still files the case
        text = ""
    return _clean(str(text).strip(), EXCERPT_CHARS)


def _date(message: EmailMessage, now: datetime) -> tuple[datetime | None, str]:
    """Return the mail's Date and the reason it is unacceptable, if it is."""
    try:
        headers = message.get_all("Date") or []
        moment = headers[0].datetime if len(headers) == 1 else None
    except Exception:  # an unreadable date is no date
        moment = None
    if moment is None:
        return None, "no_date"
    if moment.tzinfo is None:  # "-0000": the sender did not say; read it as UTC
        moment = moment.replace(tzinfo=UTC)
    if now - moment > REPLAY_WINDOW:
        return moment, "stale_date"
    if moment - now > FUTURE_TOLERANCE:
        return moment, "future_date"
    return moment, ""


def _evidence(found: Assessment, receiver_dkim: str, spf: str) -> dict[str, Any]:
    """Return what support sees of the proof, kept with the case (DNS keys rotate later)."""
    return {
        "verified_by": found.verified_by,
        "reasons": list(found.reasons),
        "from_domain": _clean(found.from_domain, 255),
        "date": found.date.isoformat() if found.date else "",
        "dkim": [{key: value for key, value in sig.items() if key != "b"} for sig in found.signatures],
        "receiver_dkim": _clean(receiver_dkim, 500),
        "receiver_dkim_aligned_pass": [
            entry["d"] for entry in found.receiver if entry["result"] == "pass" and entry["aligned"]
        ],
        # Kept for support only: SPF judges the envelope sender, not the From address.
        "spf": _clean(spf, 500),
    }


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


def _configured_dns() -> DnsFunc:
    """Return the DKIM key lookup: real DNS, unless a test put its own in DKIM_DNSFUNC."""
    return current_app.config.get("DKIM_DNSFUNC") or dkim.dnsplug.get_txt


def _header(message: EmailMessage, name: str) -> object:
    try:
        return message.get(name, "") or ""
    except Exception:  # an unreadable header reads as empty
        return ""


def _text(value: bytes) -> str:
    return value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)


def _clean(text: str, limit: int) -> str:
    """Make attacker-supplied text storable anywhere: no NULs, no lone surrogates, bounded."""
    try:  # raw 8-bit header bytes come back from the parser as surrogate escapes
        data = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        data = text.encode("utf-8", "replace")
    return data.decode("utf-8", "replace").replace("\x00", "")[:limit]
