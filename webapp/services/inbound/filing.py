"""Filing the mail sent to support: each one stored at once as a removal case, checked in a job.

The same mail delivered twice files one case. The check (`check`) asks `proof.judge` what the mail
proves, refuses a proof already used by an earlier case, and closes unproven cases on arrival
once one sender has sent too many in a day.
"""

from __future__ import annotations

import email.headerregistry
import hashlib
import time
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from flask import current_app

from webapp.extensions import db
from webapp.models import Client, RemovalRequest, utcnow
from webapp.providers.base import InboundMail
from webapp.queue import enqueue
from webapp.services import audit
from webapp.services.inbound.addresses import aligned
from webapp.services.inbound.proof import DnsFunc, Verdict, configured_dns, judge
from webapp.services.inbound.reading import EXCERPT_CHARS, MAX_KEY_HEADER, clean

CHECK_JOB = "jobs.removals.check_removal_request"
# After this many checks that did not finish (a killed job, DNS down), the case is unverifiable.
MAX_CHECK_ATTEMPTS = 3
# Unproven cases one sender may open in a day before further ones are closed on arrival.
UNPROVEN_PER_SENDER_PER_DAY = 5


class CheckUnfinished(RuntimeError):
    """The check could not finish now (DNS timed out); it is tried again later."""


def file_mail(mail: InboundMail) -> tuple[RemovalRequest, bool]:
    """Store one mail a provider's inbound webhook posted as a case; return it and whether it is new.

    The same mail delivered twice files one case. A raw mail awaits its check, which runs in a
    job (nothing is parsed here); a mail without its raw message is filed as unverifiable.
    """
    if mail.raw is None:
        return _file_parsed(mail)
    raw = mail.raw
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
        evidence=_receiver_evidence(mail),
    )
    case, created = _add_once(case)
    if created:
        enqueue_check(case.id)
    return case, created


def enqueue_check(case_id: int) -> bool:
    """Queue the check of one filed mail, stopped by RQ if it overruns its deadline."""
    timeout = current_app.config["INBOUND_CHECK_SECONDS"] + 30
    return enqueue(CHECK_JOB, case_id, job_id=f"removal-check-{case_id}", timeout=timeout)


def _file_parsed(mail: InboundMail) -> tuple[RemovalRequest, bool]:
    """File a mail the provider sent without its raw message, as unverifiable, and alert."""
    from webapp.services.alerts import alert_operators

    fields = mail.parsed
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
        from_address=clean(address or claimed, 320),
        subject=clean(fields.get("subject", ""), 300),
        body_excerpt=clean(fields.get("text", "").strip(), EXCERPT_CHARS),
        fingerprint=fingerprint,
        verdict="unverifiable",
        checked_at=utcnow(),
        evidence={"reasons": ["parsed_mode"], **_receiver_evidence(mail)},
    )
    case, created = _add_once(case)
    if created:
        alert_operators(
            "inbound_parsed_mode",
            "A removal request arrived without its raw message, so nobody can verify it. " + mail.raw_hint,
        )
        db.session.commit()
    return case, created


def _receiver_evidence(mail: InboundMail) -> dict[str, Any]:
    """What the receiving provider said of the mail, for support to read (it proves nothing)."""
    return {
        "receiver": clean(mail.receiver, 40),
        "receiver_dkim": clean(mail.receiver_dkim, 500),
        "receiver_dkim_passes": [clean(domain, 253) for domain in mail.receiver_dkim_passes[:20]],
        "spf": clean(mail.spf, 500),
    }


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


def _record(case: RemovalRequest, found: Verdict, earlier: RemovalRequest | None, now: datetime) -> None:
    """Write the verdict and what support may read into the case."""
    case.from_address = clean(found.from_address, 320)
    case.subject = found.signed_headers.get("subject", found.subject)[:300]
    case.message_id = found.message_id
    case.proof_key = found.proof_key or None
    case.body_excerpt = found.body
    case.verdict = "verified" if found.verified else "unverified"
    case.checked_at = now
    case.evidence = {
        **(case.evidence or {}),
        "reasons": list(dict.fromkeys(found.reasons)),
        "from_domain": clean(found.from_domain, 255),
        "date": found.date.isoformat() if found.date else "",
        "signed_at": found.signed_at.isoformat() if found.signed_at else "",
        "dkim": found.signatures[:20],
        "more_signatures": max(0, len(found.signatures) - 20),
        "signed_headers": found.signed_headers,
        "other_signed": found.other_signed[:30],
        "seen_in_case": earlier.id if earlier is not None else None,
        "receiver_dkim_aligned_pass": [
            domain
            for domain in (case.evidence or {}).get("receiver_dkim_passes", [])
            if found.from_domain and aligned(domain, found.from_domain)
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
    from webapp.services.alerts import alert_operators

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
