"""Resending an email: a failed one, or a delivered one the client says never arrived."""

from __future__ import annotations

from datetime import datetime

from flask import flash, redirect, render_template, url_for
from flask_login import current_user
from werkzeug.wrappers import Response

from webapp import statuses
from webapp.emails import bp
from webapp.emails.forms import ResendForm
from webapp.extensions import db, htmx
from webapp.models import Email, utcnow
from webapp.security import clinic_staff_required, current_clinic_id
from webapp.services import clients, sending
from webapp.services.filed_as_spam import filed_as_spam
from webapp.services.timelines import email_timeline
from webapp.templating import clinic_timezone

# Failed, or delivered (and perhaps opened) yet not found by the client. Clicked proves it arrived.
RESENDABLE = (statuses.FAILED.key, statuses.DELIVERED.key, statuses.OPEN.key)


@bp.get("/emails/<int:email_id>/timeline")
@clinic_staff_required
def timeline(email_id: int) -> str:
    """Show one email's timeline: the log row's content when opened (htmx), else a page of its own."""
    shown = email_timeline(current_clinic_id(), email_id, utcnow(), clinic_timezone() or "UTC")
    partial = bool(htmx) and not htmx.history_restore_request
    template = "emails/_timeline.html" if partial else "emails/timeline.html"
    return render_template(template, timeline=shown, client=shown.email.client)


@bp.post("/emails/<int:email_id>/resend")
@clinic_staff_required
def resend(email_id: int) -> str | Response | tuple[str, int]:
    """Confirm, then resend an email (to a corrected address); the new email links to it."""
    original = clients.get_email(current_clinic_id(), email_id)
    if original.status not in RESENDABLE:
        flash("Only a failed email, or a delivered one the client cannot find, can be resent.", "error")
        return redirect(url_for("clients.show", client_id=original.client_id), code=303)
    # A delivered email its client's mail server filed as spam: a resend would most likely be too.
    filed_at = filed_as_spam([original.id]).get(original.id)
    context = {"email": original, "delivered_at": _delivered_at(original), "filed_at": filed_at}
    form = ResendForm()
    form.delivered = original.status != statuses.FAILED.key
    if not form.confirm.data:
        form = ResendForm(formdata=None, to_address=original.client.email, update_client=True, confirm="yes")
        return render_template("emails/resend.html", form=form, **context)
    if not form.validate_on_submit():
        return render_template("emails/resend.html", form=form, **context), 422
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
            "emails/resend.html", form=form, refused=refused, holders=holders, **context
        ), 422
    flash(f"Resending “{original.subject}” to {form.to_address.data}.", "success")
    return redirect(url_for("clients.show", client_id=original.client_id), code=303)


def _delivered_at(email: Email) -> datetime | None:
    return min((event.occurred_at for event in email.events if event.kind == "delivered"), default=None)
