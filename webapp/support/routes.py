"""The removal-request queue and its cases."""

from __future__ import annotations

from flask import abort, flash, redirect, render_template, request, url_for
from flask_login import current_user
from werkzeug.wrappers import Response

from webapp.params import page_number
from webapp.security import support_required
from webapp.services import alerts, demo, incidents, removals
from webapp.services.inbound import proof
from webapp.services.timelines import build_timeline
from webapp.support import bp
from webapp.support.forms import DecisionForm


@bp.get("/removal-requests")
@support_required
def queue() -> str:
    """List removal requests (pending oldest first, 50 a page) and open operator incidents."""
    view = "decided" if request.args.get("view") == "decided" else "pending"
    page = page_number()
    cases, total = removals.queue_page(view, page)
    return render_template(
        "support/queue.html",
        awaiting=removals.awaiting_provider(),
        cases=cases,
        standings=removals.standings(cases),
        view=view,
        page=page,
        pages=max(1, -(-total // removals.QUEUE_PAGE_SIZE)),
        total=total,
        incidents=incidents.open_incidents(),
        alerts=incidents.loose_alert_rows(),
        form=DecisionForm(),
    )


@bp.get("/emails/<int:email_id>")
@support_required
def email_timeline(email_id: int) -> str:
    """Show the timeline of one email an operator alert names (nothing else of the client file)."""
    email, about = incidents.alerted_email(email_id)
    return render_template(
        "support/email.html", email=email, alerts=about, timeline=build_timeline(email.events)
    )


@bp.get("/incidents/<int:incident_id>")
@support_required
def incident(incident_id: int) -> str:
    """Show one incident: its cause, its count and every email it names."""
    return render_template(
        "support/incident.html", view=incidents.incident_view(incident_id), form=DecisionForm()
    )


@bp.post("/alerts/<int:alert_id>/resolve")
@support_required
def resolve_alert(alert_id: int) -> Response:
    """Mark an operator alert as dealt with."""
    if DecisionForm().validate_on_submit():
        alerts.resolve_alert(alert_id, current_user)
    return redirect(url_for("support.queue"), code=303)


@bp.post("/incidents/<int:incident_id>/resolve")
@support_required
def resolve_incident(incident_id: int) -> Response:
    """Mark every open alert of an incident as dealt with."""
    if DecisionForm().validate_on_submit():
        alerts.resolve_incident(incident_id, current_user)
    return redirect(url_for("support.queue"), code=303)


@bp.get("/removal-requests/<int:case_id>")
@support_required
def case(case_id: int) -> str:
    """Show one case with the evidence that it came from the client's own address."""
    removal = removals.get_case(case_id)
    return render_template(
        "support/case.html",
        case=removal,
        standing=removals.case_standing(removal),
        matches=removals.matching_clients(removal),
        spam_entry=removals.spam_entry(removal),
        reasons=proof.REASONS,
        sandbox_support_desk=demo.sandbox_can_reactivate(),
        form=DecisionForm(),
    )


@bp.post("/removal-requests/<int:case_id>/approve")
@support_required
def approve(case_id: int) -> Response:
    """Lift the spam-list block for the address, if the evidence allows it."""
    form = DecisionForm()
    removal = removals.get_case(case_id)
    if form.validate_on_submit():
        try:
            removals.approve(removal, current_user, form.note.data or "")
        except removals.DecisionRefused as refused:
            flash(str(refused), "error")
        else:
            flash(f"Approved: lifting the block for {removal.from_address}…", "success")
    return redirect(url_for("support.case", case_id=removal.id), code=303)


@bp.post("/removal-requests/<int:case_id>/reject")
@support_required
def reject(case_id: int) -> Response:
    """Close the case without lifting the block."""
    form = DecisionForm()
    removal = removals.get_case(case_id)
    if form.validate_on_submit():
        try:
            removals.reject(removal, current_user, form.note.data or "")
        except removals.DecisionRefused as refused:
            flash(str(refused), "error")
        else:
            flash("The request was rejected.", "success")
    return redirect(url_for("support.case", case_id=removal.id), code=303)


@bp.post("/removal-requests/<int:case_id>/provider-lifted")
@support_required
def provider_lifted(case_id: int) -> Response:
    """Record that the email provider lifted a block it would not lift through its API."""
    form = DecisionForm()
    removal = removals.get_case(case_id)
    if form.validate_on_submit():
        try:
            removals.record_provider_lift(removal, current_user, form.note.data or "")
        except removals.DecisionRefused as refused:
            flash(str(refused), "error")
        else:
            flash(f"Recorded: the block on {removal.from_address} is lifted; sending may resume.", "success")
    return redirect(url_for("support.case", case_id=removal.id), code=303)


@bp.post("/removal-requests/<int:case_id>/sandbox-reactivate")
@support_required
def sandbox_reactivate(case_id: int) -> Response:
    """Sandbox demo only: play the provider's support, which lifts what its API will not."""
    if not demo.sandbox_can_reactivate():
        abort(404)
    removal = removals.get_case(case_id)
    if DecisionForm().validate_on_submit() and removal.awaiting_provider:
        demo.sandbox_reactivate(removal.from_address)
        flash(f"Sandbox: Postmark's support reactivated {removal.from_address}. Record it below.", "success")
    return redirect(url_for("support.case", case_id=removal.id), code=303)
