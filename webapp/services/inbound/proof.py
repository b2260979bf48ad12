"""Proving who sent a removal request: what a raw mail, filed by `filing`, proves about its sender.

The provider's inbound webhook posts every mail sent to the support address. The route only stores
the raw bytes (`filing.file_mail`) and queues `filing.check`, which asks `judge` whether the mail
proves that the client asked, on purpose, to be taken off the spam list. A mail is *verified* only
when all of this holds:

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
what DKIM verified; sizes are bounded before any parser runs (`reading`).

The receiving provider's own verdicts (SendGrid's `dkim` field, Postmark's SpamAssassin DKIM
tests) and any Authentication-Results header are shown to support as information; they never
verify a request. Every mail is filed, verified or not: support sees it,
and only verified ones can be approved.
"""

from __future__ import annotations

import email.utils
import hashlib
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import dkim
import dkim.dnsplug
import dkim.util

from webapp.services.inbound.addresses import UNREADABLE_SENDER, aligned, names_address, sender_address
from webapp.services.inbound.reading import (
    MAX_HEADER_BLOCK,
    MAX_HEADER_LINES,
    MAX_KEY_HEADER,
    MailHeaders,
    ascii_text,
    body_text,
    clean,
    decoded,
    header_end,
)

log = logging.getLogger(__name__)

FUTURE_TOLERANCE = timedelta(days=1)
MAX_SIGNED_NAMES = 64
MAX_SIGNATURE_HEADER = 8192
# Only signatures of the sender's own domain are checked, and only this many of them.
MAX_CHECKED_SIGNATURES = 3

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


_DKIM_LOG = logging.getLogger("dkimpy")


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
    headers_end = header_end(raw)
    if headers_end > MAX_HEADER_BLOCK or raw.count(b"\n", 0, max(headers_end, 0)) > MAX_HEADER_LINES:
        found.reasons.append("headers_too_large")
        return found
    if headers_end < 0 or b"\x00" in raw[:headers_end] or re.search(rb"\r(?!\n)", raw[:headers_end]):
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
    found.subject = clean(decoded(headers.first("subject")), 300)
    found.message_id = clean(headers.first("message-id"), 300)
    if any(len(value) > MAX_KEY_HEADER for name in SINGLE_HEADERS for value in headers.all(name)):
        found.reasons.append("header_too_long")
        found.from_address = clean(headers.first("from"), 320)
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
            name: clean(decoded(headers.first(name)), MAX_KEY_HEADER)
            for name in SHOWN_HEADERS
            if name in signed_names and headers.count(name)
        }
        if "from" in found.signed_headers:  # the proven address only: a comment can look like another
            found.signed_headers["from"] = found.from_address
        found.other_signed = sorted(set(signed_names) - set(SHOWN_HEADERS))
        recipients = headers.all("to") + (headers.all("cc") if "cc" in signed_names else [])
        if not names_address(recipients, support_address):
            found.reasons.append("not_to_support")
    found.body = body_text(headers, checker.body)
    return found


def configured_dns(config: dict[str, Any]) -> DnsFunc:
    """Return the DKIM key lookup: a test's, the sandbox's for its demo domain, else real DNS."""
    if config.get("DKIM_DNSFUNC"):
        return config["DKIM_DNSFUNC"]
    if config["EMAIL_PROVIDER"] == "sandbox":
        from webapp.sandbox.client_mail import sandbox_dns

        return sandbox_dns(config)
    return dkim.dnsplug.get_txt


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
        signer = ascii_text(tags.get(b"d", b"")).lower().rstrip(".")
        entry = {
            "d": clean(signer, 255),
            "s": clean(ascii_text(tags.get(b"s", b"")), 255),
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
            signed = [ascii_text(name).strip().lower() for name in tags.get(b"h", b"").split(b":")]
            found.signed_at = _signed_at(tags)
            return {"signed": signed, "d": signer, "bh": re.sub(r"\s+", "", ascii_text(tags.get(b"bh", b"")))}
    return None


def _weakness(tags: dict[bytes, bytes], now: datetime, max_age: timedelta) -> str:
    """Return why a signature cannot prove a request even if it verifies ("" if it can)."""
    if tags.get(b"a", b"").strip() not in ACCEPTED_ALGORITHMS:
        return f"algorithm {ascii_text(tags.get(b'a', b'')).strip() or 'missing'} is not accepted"
    if b"l" in tags:
        return "it signs only the first part of the body (l=)"
    names = tags.get(b"h", b"").split(b":")
    if len(names) > MAX_SIGNED_NAMES:
        return f"it lists more than {MAX_SIGNED_NAMES} headers"
    signed = {ascii_text(name).strip().lower() for name in names}
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
    return {"result": "pass" if passed else "fail", "why": clean(why, 300)}


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
