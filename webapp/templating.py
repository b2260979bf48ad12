"""Template filters and values shared by every page."""

from __future__ import annotations

from datetime import datetime

from flask import Flask, has_request_context, request

from webapp import bounce_reasons, statuses, timezones
from webapp.help.guide import FILED_AS_SPAM, STILL_STUCK_HOURS
from webapp.models import MESSAGE_KINDS, Email
from webapp.timezones import ago


def init_app(app: Flask) -> None:
    """Register the filters and globals."""
    app.add_template_filter(ago, "ago")
    app.add_template_filter(short_datetime)
    app.add_template_filter(short_time)
    app.add_template_filter(short_date)
    app.add_template_global(same_day)
    app.add_template_global(clinic_timezone)
    app.add_template_filter(status_label)
    app.add_template_filter(failure_reason)
    app.add_template_filter(failure_key)
    app.add_template_global(FILED_AS_SPAM, "filed_as_spam")
    app.context_processor(_attention_count)
    app.add_template_global(MESSAGE_KINDS, "kind_labels")
    app.add_template_global(STILL_STUCK_HOURS, "still_stuck_hours")


def clinic_timezone() -> str:
    """Return the signed-in clinic's time zone ("" for support staff and outside a request)."""
    if not has_request_context():
        return ""
    # Once per request (kept in its environ: an app context, and so `g`, may outlive a request
    # in tests): the filters below ask for every time they format.
    environ = request.environ
    if "webapp.clinic_timezone" not in environ:
        from flask_login import current_user

        if not current_user.is_authenticated or current_user.clinic is None:
            environ["webapp.clinic_timezone"] = ""
        else:
            environ["webapp.clinic_timezone"] = current_user.clinic.timezone or "UTC"
    return environ["webapp.clinic_timezone"]


def _local(moment: datetime) -> datetime:
    return timezones.local(moment, clinic_timezone() or "UTC")


def short_datetime(moment: datetime) -> str:
    """Format a moment as "12 Nov 09:14 PST", in the clinic's time zone (support: UTC)."""
    return timezones.format_datetime(_local(moment))


def short_time(moment: datetime) -> str:
    """Format a moment as "09:14 PST", in the clinic's time zone (support: UTC)."""
    return timezones.format_time(_local(moment))


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


def failure_key(email: Email) -> str | None:
    """Return the key of a failed email's plain reason ("mailbox_full", …), if it has one."""
    return bounce_reasons.failure_key(email.events)


def _attention_count() -> dict:
    """Offer the navigation's Needs attention count; only pages that show it pay for it."""

    def count() -> int:
        from flask_login import current_user

        from webapp.services import attention

        if not current_user.is_authenticated or current_user.clinic_id is None:
            return 0
        return attention.navigation_count(current_user.clinic_id)

    return {"attention_count": count}
