"""Template filters and values shared by every page."""

from __future__ import annotations

from datetime import datetime

from flask import Flask, has_request_context

from webapp import statuses, timezones
from webapp.help.guide import STILL_STUCK_HOURS
from webapp.models import MESSAGE_KINDS, Email


def init_app(app: Flask) -> None:
    """Register the filters and globals."""
    app.add_template_filter(ago)
    app.add_template_filter(short_datetime)
    app.add_template_filter(short_time)
    app.add_template_filter(short_date)
    app.add_template_global(same_day)
    app.add_template_global(clinic_timezone)
    app.add_template_filter(status_label)
    app.add_template_filter(failure_reason)
    app.context_processor(_attention_count)
    app.add_template_global(MESSAGE_KINDS, "kind_labels")
    app.add_template_global(STILL_STUCK_HOURS, "still_stuck_hours")


def ago(moment: datetime, now: datetime) -> str:
    """Say how long ago something happened, in the words a person would use."""
    seconds = max(0, int((now - moment).total_seconds()))
    if seconds < 45:
        return "just now"
    if seconds < 3600:
        minutes = max(1, round(seconds / 60))
        return f"{minutes} min ago"
    if seconds < 86400:
        hours = round(seconds / 3600)
        return f"{hours} hour{'s' if hours != 1 else ''} ago"
    days = round(seconds / 86400)
    return f"{days} day{'s' if days != 1 else ''} ago"


def clinic_timezone() -> str:
    """Return the signed-in clinic's time zone ("" for support staff and outside a request)."""
    if not has_request_context():
        return ""
    from flask_login import current_user

    if not current_user.is_authenticated or current_user.clinic is None:
        return ""
    return current_user.clinic.timezone or "UTC"


def _local(moment: datetime) -> datetime:
    return timezones.local(moment, clinic_timezone() or "UTC")


def short_datetime(moment: datetime) -> str:
    """Format a moment as "12 Nov 09:14 PST", in the clinic's time zone (support: UTC)."""
    local = _local(moment)
    return f"{local:%d %b %H:%M} {local.tzname()}"


def short_time(moment: datetime) -> str:
    """Format a moment as "09:14 PST", in the clinic's time zone (support: UTC)."""
    local = _local(moment)
    return f"{local:%H:%M} {local.tzname()}"


def short_date(moment: datetime) -> str:
    """Format a moment's day as "12 Nov 2026", in the clinic's time zone (support: UTC)."""
    return f"{_local(moment):%d %b %Y}"


def same_day(first: datetime, second: datetime) -> bool:
    """Return whether two moments fall on the same day of the clinic's calendar."""
    return _local(first).date() == _local(second).date()


def status_label(key: str) -> str:
    """Return the label of a status key ("spam-report" -> "Spam report")."""
    return statuses.get(key).label if key in statuses.BY_KEY else key


def failure_reason(email: Email) -> str:
    """Say why an email failed, in plain words."""
    from webapp.services.clients import failure_reason as reason

    return reason(email)


def _attention_count() -> dict:
    """Offer the navigation's Needs attention count; only pages that show it pay for it."""

    def count() -> int:
        from flask_login import current_user

        from webapp.services import attention

        if not current_user.is_authenticated or current_user.clinic_id is None:
            return 0
        return attention.counts(current_user.clinic_id)["all"]

    return {"attention_count": count}
