"""What needs attention at the clinic, and marking an item as dealt with (or undoing that)."""

from __future__ import annotations

from flask import abort, flash, redirect, render_template, url_for
from flask_login import current_user
from werkzeug.wrappers import Response

from webapp.attention import bp
from webapp.attention.forms import HandledForm
from webapp.models import utcnow
from webapp.params import id_arg
from webapp.security import clinic_staff_required, current_clinic_id
from webapp.services import attention, clients


@bp.get("/attention")
@clinic_staff_required
def index() -> str:
    """List what needs attention, most urgent first, each with its next step; an item just marked
    as dealt with (`dealt`) stays in its place with an undo."""
    now = utcnow()
    items = attention.items(current_clinic_id(), now, dealt=id_arg("dealt"))
    waiting = [item for item in items if not item.dealt]
    counts = {kind: sum(1 for item in waiting if item.kind == kind) for kind in attention.KINDS}
    return render_template("attention/index.html", items=items, counts=counts, now=now, form=HandledForm())


@bp.post("/attention/emails/<int:email_id>/handled")
@clinic_staff_required
def handled(email_id: int) -> Response:
    """Take an email off the page: the clinician dealt with it another way (called the client)."""
    email = clients.get_email(current_clinic_id(), email_id) or abort(404)
    if not HandledForm().validate_on_submit():
        return redirect(url_for("attention.index"), code=303)
    attention.mark_handled(email, current_user)
    # Back to the page with the item still in its place, saying so, with its undo.
    return redirect(url_for("attention.index", dealt=email.id, _anchor=f"dealt-{email.id}"), code=303)


@bp.post("/attention/emails/<int:email_id>/undo")
@clinic_staff_required
def undo(email_id: int) -> Response:
    """Put an email marked as dealt with back on the page (a mis-tap)."""
    email = clients.get_email(current_clinic_id(), email_id) or abort(404)
    if HandledForm().validate_on_submit() and attention.undo_handled(email, current_user):
        flash(f"“{email.subject}” to {email.client.name} is back on Needs attention.", "success")
    return redirect(url_for("attention.index", _anchor=f"about-{email.id}"), code=303)
