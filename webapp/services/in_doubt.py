"""Settling sends in doubt: ask the provider's records, within its budget, whether it took them.

When we cannot tell whether the provider took an email (a timeout, a server error, a worker killed
mid-call: webapp/services/sending.py), we look it up before any second handover. The provider says
what a lookup costs (`records_cost`: one SendGrid Email Activity query covers 50 emails, one
Postmark search one email) and how many requests a minute its records allow; settling has its own
share of that minute (webapp/services/budget.py), spread over the checks that run with the status
poll every 5 seconds. An email the records do not show IN_DOUBT_GRACE_SECONDS after its attempt was
never taken, and is handed over again, once. If the records do not show that second handover
either, the provider takes emails without reporting on them: the email is held, never handed over
a third time (a client must never get a reminder twice because of us), and support is alerted.
"""

from __future__ import annotations

import contextlib
import logging
from datetime import datetime

import sqlalchemy as sa
from flask import current_app
from redis.exceptions import LockError, RedisError
from redis.lock import Lock

from webapp.extensions import db
from webapp.freshness.counters import mark_changed
from webapp.models import Email, utcnow
from webapp.providers import get_provider
from webapp.providers.base import AcceptedResult, EmailProvider, SentRef
from webapp.services import budget
from webapp.services.alerts import alert_operators
from webapp.services.sending import IN_DOUBT_RECHECK, in_doubt_grace, mark_accepted, wake_senders

log = logging.getLogger(__name__)

# The poll job, and this check with it, runs every 5 seconds (jobs/cron.py): a check makes at most
# a twelfth of the minute's requests, so lookups spread over the minute rather than burst.
CHECKS_PER_MINUTE = 12
# Requests made between two renewals of the check's lock (a killed checker holds it that long).
LOOKUP_SLICE = 5
IN_DOUBT_LOCK_KEY = "in-doubt-check-lock"
# Handovers again after the records did not show the one before: once, so at most two in all.
MAX_RESENDS_UNFOUND = 1
UNREPORTED_ALERT = "email_unreported"


def requests_per_check(provider: EmailProvider) -> int:
    """Return how many lookup requests one check may make (the budget decides how many it does)."""
    return max(1, -(-budget.limit(provider) // CHECKS_PER_MINUTE))


def check_in_doubt(provider: EmailProvider | None = None) -> int:
    """Ask the provider's records about in-doubt sends, within settling's share of the budget;
    return how many were settled (accepted, queued again, or held)."""
    redis = current_app.extensions["redis"]
    # Long enough for a slice of requests to time out; short, so a killed checker blocks little.
    hold = LOOKUP_SLICE * current_app.config["SEND_TIMEOUT_SECONDS"] + 15
    try:
        lock = redis.lock(IN_DOUBT_LOCK_KEY, timeout=hold, blocking=False)
        if not lock.acquire():
            return 0  # another worker is checking these very emails
    except RedisError as error:
        log.warning("cannot check in-doubt sends without Redis: %s", error)
        return 0
    try:
        return _check(provider or get_provider(current_app.config), utcnow(), lock)
    finally:
        with contextlib.suppress(LockError, RedisError):  # it expires by itself
            lock.release()


def _check(provider: EmailProvider, now: datetime, lock: Lock) -> int:
    per_check = requests_per_check(provider)
    emails = list(
        db.session.execute(
            sa.select(Email)
            .where(Email.send_state == "in_doubt", Email.next_attempt_at <= now)
            .order_by(Email.next_attempt_at, Email.id)
            .limit(per_check * provider.records_cost.emails_per_lookup)
        ).scalars()
    )
    if not emails:
        return 0
    unknown = [email for email in emails if not email.provider_message_id]
    answer = _look_up(provider, unknown, per_check, lock) if unknown else AcceptedResult(found={})
    settled: list[int] = []
    resend = False
    grace = in_doubt_grace()
    # In id order, like the webhook job and the poller: concurrent writers lock rows in one order.
    for email in sorted(emails, key=lambda email: email.id):
        db.session.refresh(email, with_for_update=True)
        if email.send_state != "in_doubt":
            continue  # settled meanwhile by a webhook event or a late answer
        attempted_at = email.send_claimed_at or email.in_doubt_since or now
        if email.provider_message_id or email.app_message_id in answer.found:
            mark_accepted(email, email.provider_message_id or answer.found.get(email.app_message_id))
            settled.append(email.id)
        elif email.app_message_id in answer.checked:
            if now - attempted_at < grace:
                email.next_attempt_at = attempted_at + grace  # "not found" only means "not yet"
                continue
            # Long enough for the provider's records to show it: this handover never arrived.
            if email.resends_unfound >= MAX_RESENDS_UNFOUND:
                hold(email, provider, now)
            else:
                email.send_state = "queued"
                email.resends_unfound += 1
                email.next_attempt_at = now
                email.send_error = "the email provider has no record of it; sending it again"
                mark_changed(email)
                resend = True
            settled.append(email.id)
        elif answer.error:
            email.next_attempt_at = now + IN_DOUBT_RECHECK  # the provider is failing: do not hammer it
        # Otherwise the budget or a rate limit stopped us first: it keeps its turn at the head.
    db.session.commit()
    if resend:
        wake_senders()
    return len(settled)


def _look_up(provider: EmailProvider, emails: list[Email], per_check: int, lock: Lock) -> AcceptedResult:
    """Ask the provider's records about these emails, a slice of requests at a time."""
    wanted = min(per_check, -(-len(emails) // provider.records_cost.emails_per_lookup))
    grant = budget.take(provider, budget.SETTLE, wanted)
    refs = [SentRef(email.app_message_id, email.to_address) for email in emails]
    found: dict[str, str | None] = {}
    checked: set[str] = set()
    made = 0
    last = AcceptedResult(found={})
    while made < grant.requests and refs:
        last = provider.find_accepted(refs, min(LOOKUP_SLICE, grant.requests - made))
        made += last.requests_made
        found.update(last.found)
        checked |= last.checked
        if last.rate_limited_for or last.error or not (last.found or last.checked):
            break
        refs = [ref for ref in refs if ref.app_message_id not in checked and ref.app_message_id not in found]
        with contextlib.suppress(LockError, RedisError):
            lock.reacquire()  # more to ask: keep the lock for another slice
    budget.give_back(grant, made)
    if last.rate_limited_for:
        budget.block_polling(last.rate_limited_for)
    if last.error:
        log.warning("checking in-doubt sends failed: %s", last.error)
    return AcceptedResult(found, frozenset(checked), made, last.rate_limited_for, last.error)


def hold(email: Email, provider: EmailProvider, now: datetime) -> None:
    """Keep an email the provider took twice without reporting on it from a third handover."""
    email.send_state = "held"
    email.next_attempt_at = None
    email.send_error = "handed to the email provider twice; its records show neither; not sent again"
    # This alert says why it waits; the stuck sweep need not raise a second one about it.
    email.stuck_alerted_at = email.stuck_alerted_at or now
    mark_changed(email)
    alert_operators(
        UNREPORTED_ALERT,
        f"Email {email.reference}: the email provider accepted it but has not reported on it. It was "
        "handed over twice, the second time after the provider's records did not show the first, "
        "and they show neither; it is held and will not be sent a third time. If the client must "
        f"have it, tell {email.clinic.name} to reach them another way; check {provider.records_hint}.",
        email,
    )
