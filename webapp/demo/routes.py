"""The demo's buttons: the client's removal email, and the provider's support reactivating an address."""

from __future__ import annotations

from flask import abort, current_app, flash, redirect, url_for
from werkzeug.wrappers import Response

from webapp.demo import actions, bp
from webapp.demo.forms import DemoActionForm
from webapp.security import clinic_staff_required, current_clinic_id, support_required
from webapp.services import clients, removals


@bp.post("/clients/<int:client_id>/sandbox-removal-mail")
@clinic_staff_required
def client_removal_mail(client_id: int) -> Response:
    """Play the client, emailing support from their address to lift the block."""
    client = clients.get_client(current_clinic_id(), client_id) or abort(404)
    if DemoActionForm().validate_on_submit():
        if actions.post_sandbox_client_mail(client.email) == 200:
            flash(
                f"Sandbox: {client.name} emailed {current_app.config['SUPPORT_ADDRESS']} asking to come off "
                "the spam list. Support can now approve it.",
                "success",
            )
        else:
            flash("Sandbox: the support mailbox did not accept the mail.", "error")
    return redirect(url_for("clients.show", client_id=client.id), code=303)


@bp.post("/support/removal-requests/<int:case_id>/sandbox-reactivate")
@support_required
def provider_reactivate(case_id: int) -> Response:
    """Play the provider's support, which lifts what its API will not (Postmark's sandbox only)."""
    if not actions.support_desk():
        abort(404)
    removal = removals.get_case(case_id) or abort(404)
    if DemoActionForm().validate_on_submit() and removal.awaiting_provider:
        actions.reactivate(removal.from_address)
        flash(f"Sandbox: Postmark's support reactivated {removal.from_address}. Record it below.", "success")
    return redirect(url_for("support.case", case_id=removal.id), code=303)
