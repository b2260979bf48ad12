"""The operator's snapshot in Prometheus text format, built fresh for each scrape."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from webapp.services.operations import Snapshot


class SnapshotCollector(Collector):
    """Expose one snapshot as gauges (every figure is read from the database or Redis)."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        """Yield one gauge family per figure; figures we could not read are left out."""
        snap = self.snapshot
        jobs = GaugeMetricFamily("clinicmail_queue_jobs", "RQ jobs by state", labels=["state"])
        for state in ("waiting", "running", "scheduled", "failed"):
            value = getattr(snap.queue, state)
            if value is not None:
                jobs.add_metric([state], value)
        yield jobs
        yield _gauge(
            "clinicmail_queue_oldest_waiting_seconds",
            "How long the oldest waiting job has waited",
            snap.queue.oldest_waiting_seconds or 0.0,
        )
        yield _gauge(
            "clinicmail_events_applied_per_minute",
            "Email events stored per minute, averaged over five minutes",
            snap.events_per_minute,
        )
        yield _gauge(
            "clinicmail_webhook_lag_seconds_average",
            "Average time from receiving a webhook batch to applying it, last 15 minutes",
            snap.lag_average_seconds or 0.0,
        )
        yield _gauge(
            "clinicmail_webhook_lag_seconds_max",
            "Longest time from receiving a webhook batch to applying it, last 15 minutes",
            snap.lag_max_seconds or 0.0,
        )
        yield _gauge(
            "clinicmail_webhook_unapplied_batches",
            "Stored webhook batches not yet applied",
            snap.unapplied_batches,
        )
        yield _gauge(
            "clinicmail_webhook_oldest_unapplied_seconds",
            "Age of the oldest webhook batch not yet applied",
            snap.oldest_unapplied_seconds or 0.0,
        )
        if snap.budget_used is not None:
            yield _gauge(
                "clinicmail_activity_budget_used",
                "Activity API requests used in the last 60 seconds",
                snap.budget_used,
            )
        yield _gauge(
            "clinicmail_activity_budget_limit", "Activity API requests allowed per minute", snap.budget_limit
        )
        yield _gauge(
            "clinicmail_activity_blocked",
            "1 while the provider holds activity requests back (429)",
            1 if snap.budget_blocked_until else 0,
        )
        alerts = GaugeMetricFamily("clinicmail_open_alerts", "Open operator alerts by kind", labels=["kind"])
        for kind, count in sorted(snap.alerts_by_kind.items()):
            alerts.add_metric([kind], count)
        yield alerts
        yield _gauge("clinicmail_redis_up", "1 when Redis answered", 1 if snap.queue.available else 0)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def render(snapshot: Snapshot) -> bytes:
    """Return the snapshot in Prometheus text exposition format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot))
    return generate_latest(registry)
