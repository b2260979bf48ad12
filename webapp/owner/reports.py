"""The owner's deliverability view."""

from __future__ import annotations

from flask import render_template

from webapp import statuses
from webapp.models import utcnow
from webapp.owner import bp
from webapp.owner.charts import stacked_bars
from webapp.security import current_clinic_id, owner_required
from webapp.services import deliverability
from webapp.templating import clinic_timezone


@bp.get("/deliverability")
@owner_required
def deliverability_view() -> str:
    """Show the last 30 days of the clinic's email by day and status, with what went wrong."""
    overview = deliverability.overview(current_clinic_id(), utcnow(), clinic_timezone() or "UTC")
    return render_template(
        "owner/deliverability.html",
        overview=overview,
        chart=stacked_bars(overview.days, overview.daily),
        statuses=statuses.ALL,
    )
