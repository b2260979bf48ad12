"""Periodic sweeps: re-enqueue what Redis lost, flag stuck emails, give up on old deferrals."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

import sqlalchemy as sa
from flask import current_app

from webapp import statuses, timezones
from webapp.extensions import db
from webapp.models import Email, EmailEvent, RemovalRequest, SpamListEntry, utcnow
from webapp.providers import get_provider
from webapp.providers.base import ProviderError, ProviderEvent
from webapp.queue import enqueue
from webapp.services import alerts, clock_skew, sending, set_aside, webhooks
from webapp.services.events import add_to_spam_list, apply_events, spam_list_changed

log = logging.getLogger(__name__)

# The provider retries a deferred email for up to 72 hours, then gives up.
DEFERRAL_GIVE_UP = timedelta(hours=72)


def sweep(now: datetime | None = None) -> dict[str, int]:
    """Run every sweep once; return how much each one did."""
    now = now or utcnow()
    steps: dict[str, Callable[[], int]] = {
        "abandoned": lambda: sending.recover_abandoned_sends(now),
        "stuck": lambda: flag_stuck_emails(now),
        "sends": lambda: sending.wake_for_due(now),
        "batches": lambda: _enqueue_each(
            webhooks.APPLY_JOB, "batch", webhooks.unapplied_batches(now - timedelta(seconds=30))
        ),
        "late_batches": lambda: set_aside.alert_late_batches(now),
        "clock_skew": lambda: clock_skew.alert_if_skewed(now),
        "adopted": lambda: webhooks.adopt_pending_events(now),
        "expired": lambda: expire_old_deferrals(now),
        "forgotten_batches": lambda: webhooks.forget_applied_batches(now),
        "incidents": lambda: _regroup_alerts(now),
    }
    done = {}
    for name, step in steps.items():
        # One step failing (a database hiccup, a bad row) must not keep the others from running.
        try:
            done[name] = step()
        except Exception:
            db.session.rollback()
            log.exception("sweep step %s failed", name)
            done[name] = 0
    return done


def flag_stuck_emails(now: datetime) -> int:
    """Alert support once about each email stuck in Sending or Processed for over 10 minutes
    (an email whose send is in doubt among them, with what is being done about it)."""
    cutoff = now - timedelta(seconds=statuses.STUCK_AFTER_SECONDS)
    stuck = list(
        db.session.execute(
            sa.select(Email).where(
                Email.status.in_((statuses.SENDING.key, statuses.PROCESSED.key)),
                Email.status_known_at <= cutoff,  # our clock: the provider's may be hours off
                Email.stuck_alerted_at.is_(None),
            )
        ).scalars()
    )
    # An alert about an email that has since moved on needs nobody's attention any more.
    alerts.resolve_cleared(now)
    for email in stuck:
        email.stuck_alerted_at = now
        if email.send_state in ("claimed", "in_doubt"):
            since = email.in_doubt_since or email.send_claimed_at or email.created_at
            alerts.alert_operators(
                "email_in_doubt",
                f"Email {email.reference}: we cannot tell whether the email provider received it (in doubt "
                f"since {timezones.utc_stamp(since)}: {email.send_error or 'no answer'}). We keep "
                "checking the provider's records and send it again only once they show it did not "
                f"arrive. If this lasts, check that {_records_hint()} work.",
                email,
            )
        else:
            alerts.alert_operators(
                "email_stuck",
                f"Stuck: “{email.subject}” from {email.clinic.name} to {email.client.name} "
                f"<{email.to_address}> (reference {email.reference}) has been in "
                f"{statuses.get(email.status).label} since {timezones.utc_stamp(email.status_changed_at)}.",
                email,
            )
    db.session.commit()
    return len(stuck)


def expire_old_deferrals(now: datetime) -> int:
    """Turn emails deferred for longer than the provider retries into Failed."""
    first_deferral = (
        sa.select(EmailEvent.email_id, sa.func.min(EmailEvent.occurred_at).label("first"))
        .where(EmailEvent.kind == "deferred")
        .group_by(EmailEvent.email_id)
        .subquery()
    )
    expired = list(
        db.session.execute(
            sa.select(Email, first_deferral.c.first)
            .join(first_deferral, first_deferral.c.email_id == Email.id)
            .where(Email.status == statuses.DEFERRED.key, first_deferral.c.first <= now - DEFERRAL_GIVE_UP)
        ).all()
    )
    for email, first in expired:
        reason = "the receiving server kept deferring it for 72 hours; the provider gave up"
        give_up = ProviderEvent(
            "expired", first + DEFERRAL_GIVE_UP, app_message_id=email.app_message_id, reason=reason
        )
        apply_events(email, [give_up], source="app")
    db.session.commit()
    return len(expired)


def sync_spam_list() -> int:
    """Make our copy of the spam-report list equal the provider's; return how many entries it has.

    Entries that appeared while the list was being fetched (a webhook's spam report) are kept, and
    an address lifted meanwhile (an approved removal) is not added back.
    """
    started = utcnow()
    known_before = db.session.execute(sa.select(sa.func.max(SpamListEntry.id))).scalar() or 0
    try:
        reports = get_provider(current_app.config).spam_reports()
    except ProviderError as error:
        log.warning("spam-report list sync failed: %s", error)
        return 0
    lifted = set(
        db.session.execute(
            sa.select(RemovalRequest.from_address).where(RemovalRequest.lifted_at >= started)
        ).scalars()
    )
    on_provider_list = {address for address, _ in reports}
    ours = {
        entry.address: entry
        for entry in db.session.execute(
            sa.select(SpamListEntry).where(SpamListEntry.address.in_(on_provider_list))
        ).scalars()
    }
    for address, reported_at in reports:
        if address in lifted:
            continue
        entry = ours.get(address)
        if entry is None:
            add_to_spam_list(address, reported_at, None, "sync")
        elif entry.source != "sync" and abs((entry.reported_at - reported_at).total_seconds()) >= 1:
            # Ours was dated by the event that told us (a dropped send); the provider knows when
            # the client reported it, which is what the client file says.
            entry.reported_at = reported_at
            entry.source = "sync"
            spam_list_changed([address])
    dropped = db.session.execute(
        sa.delete(SpamListEntry)
        .where(SpamListEntry.id <= known_before, SpamListEntry.address.not_in(on_provider_list))
        .returning(SpamListEntry.address)
    ).scalars()
    spam_list_changed(list(dropped))
    db.session.commit()
    return len(on_provider_list - lifted)


def _regroup_alerts(now: datetime) -> int:
    """Group alerts left outside an open incident; close incidents left without an open alert."""
    grouped = alerts.regroup(now)
    alerts.close_empty_incidents(now)
    db.session.commit()
    return grouped


def _enqueue_each(job: str, prefix: str, ids: list[int]) -> int:
    for item_id in ids:
        enqueue(job, item_id, job_id=f"{prefix}-{item_id}")
    return len(ids)


def _records_hint() -> str:
    """Say where the configured provider keeps the records that settle a send in doubt."""
    return get_provider(current_app.config).records_hint
