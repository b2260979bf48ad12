"""Template filters and values shared by every page."""

from __future__ import annotations

from datetime import datetime

from flask import Flask, has_request_context, request

from webapp import bounce_reasons, statuses, timezones
from webapp.help.guide import FILED_AS_SPAM
from webapp.models import MESSAGE_KINDS, Email
from webapp.services.email_content import MAX_RECEIPT_LINES
from webapp.services.next_steps import CONTACT_SUPPORT_AFTER_WORDS, STUCK_AFTER_WORDS
from webapp.timezones import ago


def init_app(app: Flask) -> None:
    """Register the filters and globals."""
    app.add_template_filter(ago, "ago")
    app.add_template_filter(short_datetime)
    app.add_template_filter(short_time)
    app.add_template_filter(short_date)
    app.add_template_filter(full_datetime)
    app.add_template_filter(timezones.format_date, "day")
    app.add_template_filter(timezones.format_day, "short_day")
    app.add_template_global(same_day)
    app.add_template_global(clinic_timezone)
    app.add_template_filter(status_label)
    app.add_template_filter(failure_reason)
    app.add_template_filter(failure_key)
    app.add_template_global(FILED_AS_SPAM, "filed_as_spam")
    app.context_processor(_attention_count)
    app.add_template_global(MESSAGE_KINDS, "kind_labels")
    app.add_template_global(MAX_RECEIPT_LINES, "max_receipt_lines")
    app.add_template_global(STUCK_AFTER_WORDS, "stuck_after")
    app.add_template_global(CONTACT_SUPPORT_AFTER_WORDS, "contact_support_after")
    app.add_template_global(False, "sandbox_demo")  # the demo blueprint (webapp/demo) says True


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


# Every time a page shows is formatted here, on the server, in the clinic's zone and labelled with
# it (support and operator pages: UTC); no script re-formats it with the browser's zone data.


def short_datetime(moment: datetime) -> str:
    """Format a moment as "12 Nov 09:14 PST", in the clinic's time zone (support: UTC)."""
    return timezones.format_datetime(_local(moment))


def short_time(moment: datetime) -> str:
    """Format a moment as "09:14 PST", in the clinic's time zone (support: UTC)."""
    return timezones.format_time(_local(moment))


def full_datetime(moment: datetime) -> str:
    """Format a moment as "Wed 9 Dec 2026 at 10:00 MST" (an appointment), in the clinic's time zone."""
    return timezones.format_full(_local(moment))


def short_date(moment: datetime) -> str:
    """Format a moment's day as "12 Nov 2026", in the clinic's time zone (support: UTC)."""
    return timezones.format_date(_local(moment).date())


def same_day(first: datetime, second: datetime) -> bool:
    """Return whether two moments fall on the same day of the clinic's calendar."""
    return _local(first).date() == _local(second).date()


def status_label(key: str) -> str:
    """Return the label of a status key ("spam-report" -> "Spam report")."""
    return statuses.get(key).label if key in statuses.BY_KEY else key


def failure_reason(email: Email) -> str:
    """Say why an email failed, in plain words."""
    from webapp.services.timelines import failure_reason as reason

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
