"""What needs attention at the clinic, and marking an item as dealt with."""

from __future__ import annotations

from flask import flash, redirect, render_template, url_for
from flask_login import current_user
from werkzeug.wrappers import Response

from webapp.attention import bp
from webapp.attention.forms import HandledForm
from webapp.models import utcnow
from webapp.security import clinic_staff_required, current_clinic_id
from webapp.services import attention, clients


@bp.get("/attention")
@clinic_staff_required
def index() -> str:
    """List what needs attention, most urgent first, each with its next step."""
    now = utcnow()
    items = attention.items(current_clinic_id(), now)
    counts = {kind: sum(1 for item in items if item.kind == kind) for kind in attention.KINDS}
    return render_template("attention/index.html", items=items, counts=counts, now=now, form=HandledForm())


@bp.post("/attention/emails/<int:email_id>/handled")
@clinic_staff_required
def handled(email_id: int) -> Response:
    """Take an email off the page: the clinician dealt with it another way (called the client)."""
    email = clients.get_email(current_clinic_id(), email_id)
    if HandledForm().validate_on_submit():
        attention.mark_handled(email, current_user)
        flash(f"Marked “{email.subject}” to {email.client.name} as dealt with.", "success")
    return redirect(url_for("attention.index"), code=303)
