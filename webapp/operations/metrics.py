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
                "Provider records API requests made in the last minute",
                snap.budget_used,
            )
        used = GaugeMetricFamily(
            "clinicmail_activity_budget_used_by_share",
            "Provider records API requests made in the last minute, by use (settle, poll)",
            labels=["share"],
        )
        for share, count in sorted(snap.budget_by_share.items()):
            used.add_metric([share], count)
        yield used
        yield _gauge(
            "clinicmail_activity_budget_limit",
            "Provider records API requests allowed per minute",
            snap.budget_limit,
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
        incidents = GaugeMetricFamily(
            "clinicmail_open_incidents",
            "Open incidents (alerts of one cause, grouped) by kind",
            labels=["kind"],
        )
        emails = GaugeMetricFamily(
            "clinicmail_open_incident_alerts",
            "Open alerts in each open incident, by kind and scope (clinic:<id> or provider:<name>)",
            labels=["kind", "scope"],
        )
        counts: dict[str, int] = {}
        for view in snap.incidents:
            counts[view.incident.kind] = counts.get(view.incident.kind, 0) + 1
            emails.add_metric([view.incident.kind, view.incident.scope], view.open_alerts)
        for kind, count in sorted(counts.items()):
            incidents.add_metric([kind], count)
        yield incidents
        yield emails
        yield _gauge("clinicmail_redis_up", "1 when Redis answered", 1 if snap.queue.available else 0)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def render(snapshot: Snapshot) -> bytes:
    """Return the snapshot in Prometheus text exposition format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot))
    return generate_latest(registry)
