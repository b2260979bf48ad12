"""An email as sent: its page, its HTML part (for a sandboxed frame) and its calendar attachment."""

from __future__ import annotations

from flask import abort, render_template
from werkzeug.wrappers import Response

from webapp.email_frame import framed_email
from webapp.emails import bp
from webapp.security import clinic_staff_required, current_clinic_id
from webapp.services import as_sent as copies
from webapp.services import calendar_file


@bp.get("/emails/<int:email_id>/as-sent")
@clinic_staff_required
def as_sent(email_id: int) -> str:
    """Show the email as it was handed to the provider: headers, HTML part (framed) and text part."""
    copy = copies.as_sent(current_clinic_id(), email_id) or abort(404)
    return render_template("emails/as_sent.html", copy=copy, email=copy.email, client=copy.email.client)


@bp.get("/emails/<int:email_id>/as-sent.html")
@clinic_staff_required
def as_sent_html(email_id: int) -> Response:
    """Serve the email's HTML part exactly as sent, under a policy that lets nothing in it run or load."""
    copy = copies.as_sent(current_clinic_id(), email_id) or abort(404)
    if copy.text_only:
        abort(404)
    return framed_email(copy.html)


@bp.get("/emails/<int:email_id>/as-sent/appointment.ics")
@clinic_staff_required
def as_sent_ics(email_id: int) -> Response:
    """Download the calendar entry the email carried (a reminder's), as sent."""
    copy = copies.as_sent(current_clinic_id(), email_id) or abort(404)
    if copy.calendar is None:
        abort(404)
    response = Response(copy.calendar, content_type=calendar_file.content_type(copy.calendar))
    response.headers["Content-Disposition"] = f'attachment; filename="{copies.CALENDAR_FILENAME}"'
    return response
