"""Resending a failed email."""

from __future__ import annotations

from flask import flash, redirect, render_template, url_for
from flask_login import current_user
from werkzeug.wrappers import Response

from webapp import statuses
from webapp.emails import bp
from webapp.emails.forms import ResendForm
from webapp.extensions import db
from webapp.security import clinic_staff_required, current_clinic_id
from webapp.services import clients, sending


@bp.post("/emails/<int:email_id>/resend")
@clinic_staff_required
def resend(email_id: int) -> str | Response | tuple[str, int]:
    """Confirm, then resend a failed email (to a corrected address); the new email links to it."""
    original = clients.get_email(current_clinic_id(), email_id)
    if original.status != statuses.FAILED.key:
        flash("Only a failed email can be resent.", "error")
        return redirect(url_for("clients.show", client_id=original.client_id), code=303)
    form = ResendForm()
    if not form.confirm.data:
        form = ResendForm(formdata=None, to_address=original.client.email, update_client=True, confirm="yes")
        return render_template("emails/resend.html", email=original, form=form)
    if not form.validate_on_submit():
        return render_template("emails/resend.html", email=original, form=form), 422
    try:
        sending.resend(
            original, to_address=form.to_address.data, update_client=form.update_client.data, by=current_user
        )
    except sending.SendRefused as refused:
        db.session.rollback()  # also undoes a corrected address saved to the client file
        # Only the person whose address is blocked can lift it: name them, not this email's client.
        holders = (
            clients.clients_with_address(original.clinic_id, refused.spam_entry.address)
            if refused.spam_entry
            else []
        )
        return render_template(
            "emails/resend.html", email=original, form=form, refused=refused, holders=holders
        ), 422
    flash(f"Resending “{original.subject}” to {form.to_address.data}.", "success")
    return redirect(url_for("clients.show", client_id=original.client_id), code=303)
