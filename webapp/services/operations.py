"""The machine's health at a glance, for support staff and for Prometheus: read-only."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from flask import current_app
from redis.exceptions import RedisError
from rq.exceptions import NoSuchJobError
from rq.job import Job

from webapp import clock
from webapp.extensions import db
from webapp.models import EmailEvent, OperatorAlert, WebhookBatch
from webapp.providers import get_provider
from webapp.providers.base import EmailProvider
from webapp.queue import get_queue
from webapp.services import budget, incidents
from webapp.services.incidents import IncidentView

log = logging.getLogger(__name__)

# Rates are averaged over this window, so one quiet minute does not read as an outage.
RATE_WINDOW = timedelta(minutes=5)
# Webhook lag is measured over the batches applied this recently.
LAG_WINDOW = timedelta(minutes=15)


@dataclass
class QueueState:
    """What the RQ queue holds; None for each figure when Redis did not answer."""

    waiting: int | None = None
    running: int | None = None
    scheduled: int | None = None
    failed: int | None = None
    oldest_waiting_seconds: float | None = None

    @property
    def available(self) -> bool:
        """Whether Redis answered."""
        return self.waiting is not None


@dataclass
class Snapshot:
    """One reading of the machine's health."""

    at: datetime
    queue: QueueState
    events_per_minute: float
    batches_applied: int
    lag_average_seconds: float | None
    lag_max_seconds: float | None
    unapplied_batches: int
    oldest_unapplied_seconds: float | None
    budget_used: int | None  # provider records requests in the last minute, all uses
    budget_limit: int
    budget_blocked_until: datetime | None
    alerts: list[OperatorAlert] = field(default_factory=list)
    incidents: list[IncidentView] = field(default_factory=list)
    budget_by_share: dict[str, int] = field(default_factory=dict)  # requests in the last minute, by use
    budget_shares: dict[str, int] = field(default_factory=dict)  # each use's share of the limit
    budget_basis: str = ""  # where the limit comes from, in words

    @property
    def loose_alerts(self) -> list[OperatorAlert]:
        """The open alerts outside the open incidents (raised before incidents, or just as one closed)."""
        open_ids = {view.incident.id for view in self.incidents}
        return [alert for alert in self.alerts if alert.incident_id not in open_ids]

    @property
    def alerts_by_kind(self) -> dict[str, int]:
        """Count the open alerts of each kind."""
        counts: dict[str, int] = {}
        for alert in self.alerts:
            counts[alert.kind] = counts.get(alert.kind, 0) + 1
        return counts


def snapshot(now: datetime | None = None) -> Snapshot:
    """Read queue depths, ingestion rate, webhook lag, the records budget, open incidents and alerts."""
    now = now or clock.now()
    events = db.session.execute(
        sa.select(sa.func.count(EmailEvent.id)).where(EmailEvent.created_at >= now - RATE_WINDOW)
    ).scalar_one()
    applied = db.session.execute(
        sa.select(WebhookBatch.received_at, WebhookBatch.applied_at).where(
            WebhookBatch.applied_at >= now - LAG_WINDOW
        )
    ).all()
    lags = [max(0.0, (applied_at - received_at).total_seconds()) for received_at, applied_at in applied]
    unapplied, oldest_unapplied = db.session.execute(
        sa.select(sa.func.count(WebhookBatch.id), sa.func.min(WebhookBatch.received_at)).where(
            WebhookBatch.applied_at.is_(None)
        )
    ).one()
    oldest_unapplied = _as_utc(oldest_unapplied)
    provider = get_provider(current_app.config)
    by_share, blocked = _records_budget(provider)
    limit = budget.limit(provider)
    return Snapshot(
        at=now,
        queue=_queue_state(now),
        events_per_minute=events / (RATE_WINDOW.total_seconds() / 60),
        batches_applied=len(lags),
        lag_average_seconds=sum(lags) / len(lags) if lags else None,
        lag_max_seconds=max(lags, default=None),
        unapplied_batches=unapplied,
        oldest_unapplied_seconds=(now - oldest_unapplied).total_seconds() if oldest_unapplied else None,
        budget_used=sum(by_share.values()) if by_share is not None else None,
        budget_limit=limit,
        budget_blocked_until=blocked,
        alerts=incidents.open_alerts(),
        incidents=incidents.open_incidents(),
        budget_by_share=by_share or {},
        budget_shares=budget.shares(limit),
        budget_basis=_budget_basis(provider),
    )


def _as_utc(value: datetime | None) -> datetime | None:
    # An aggregate bypasses the column type, so SQLite hands back a naive value or a string.
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _queue_state(now: datetime) -> QueueState:
    try:
        queue = get_queue()
        state = QueueState(
            waiting=queue.count,
            running=queue.started_job_registry.count,
            scheduled=queue.scheduled_job_registry.count,
            failed=queue.failed_job_registry.count,
        )
        # The head of the list waited longest; a job deleted meanwhile just leaves no figure.
        for job_id in queue.get_job_ids(0, 1):
            try:
                enqueued_at = Job.fetch(job_id, connection=queue.connection).enqueued_at
            except NoSuchJobError:
                enqueued_at = None
            if enqueued_at is not None:
                state.oldest_waiting_seconds = max(0.0, (now - _as_utc(enqueued_at)).total_seconds())
        return state
    except RedisError as error:
        log.warning("queue state unavailable: %s", error)
        return QueueState()


def _budget_basis(provider: EmailProvider) -> str:
    if current_app.config["ACTIVITY_REQUESTS_PER_MINUTE"]:
        return "the ACTIVITY_REQUESTS_PER_MINUTE setting"
    if provider.records_cost.documented:
        return f"{provider.name}'s published limit"
    return f"our own pace: {provider.name} publishes no limit"


def _records_budget(provider: EmailProvider) -> tuple[dict[str, int] | None, datetime | None]:
    """Return the records requests each use made in the last minute, and until when the provider
    holds us back."""
    try:
        until = budget.blocked_until(budget.BLOCKED_KEY)
    except RedisError as error:
        log.warning("records budget unavailable: %s", error)
        return None, None
    return budget.usage(provider), datetime.fromtimestamp(until, UTC) if until else None
