"""The send form: composing an email to a client, previewing it and sending it."""

from __future__ import annotations

import logging
import re
import secrets
import time

from flask import abort, current_app, flash, make_response, redirect, render_template, request, url_for
from flask_limiter import RequestLimit
from flask_login import current_user
from redis.exceptions import RedisError
from werkzeug.wrappers import Response

from webapp.clients import bp
from webapp.clients.forms import SendEmailForm
from webapp.clients.routes import _page_context
from webapp.email_frame import framed_email
from webapp.extensions import db, htmx, limiter
from webapp.models import Client, Clinic
from webapp.redis_keys import redis_key
from webapp.security import clinic_staff_required, current_clinic_id
from webapp.services import clients, email_content, sending

log = logging.getLogger(__name__)

# A preview's HTML part waits this long for its frame to ask for it (and for a reload of the frame).
PREVIEW_SECONDS = 15 * 60
_TOKEN = re.compile(r"^[0-9a-f]{32}$")


def _compose_form(client_id: int) -> tuple[Client, Clinic, SendEmailForm]:
    """The client (404 if not the clinic's), its clinic and the posted send form, ready to validate."""
    client = clients.get_client(current_clinic_id(), client_id) or abort(404)
    clinic = db.session.get(Clinic, client.clinic_id)
    form = SendEmailForm()
    form.clinic_timezone = clinic.timezone
    form.intake_problem = email_content.intake_problem(clinic)
    return client, clinic, form


@bp.post("/clients/<int:client_id>/emails")
@clinic_staff_required
def send(client_id: int) -> str | Response | tuple[str, int]:
    """Queue an email to the client; refuse it when the address is on the spam list."""
    client, clinic, form = _compose_form(client_id)
    if form.validate_on_submit():
        try:
            email = sending.send_composed(
                client, clinic, form.kind.data, form.compose(), sent_by=current_user
            )
        except email_content.CannotCompose as cannot:
            form.kind.errors.append(str(cannot))
        except sending.SendRefused as refused:
            flash(f"Not sent: {refused.reason}.", "error")
        else:
            flash(f"Sending “{email.subject}” to {client.email}.", "success")
            return redirect(url_for("clients.show", client_id=client.id), code=303)
    return render_template("clients/show.html", client=client, form=form, **_page_context(client)), 422


def _previewer() -> str:
    return f"email-preview:{current_user.id}"


def _too_many_previews(limit: RequestLimit) -> Response:
    """Past the preview limit: say so where the preview would show, and when to try again."""
    seconds = max(1, int(limit.reset_at - time.time()))
    message = (
        f"Too many previews in a short time: wait {seconds} seconds, then press Preview again. "
        "Nothing was sent."
    )
    if htmx:
        body = render_template("clients/_preview_limited.html", message=message)
    else:
        back = (url_for("clients.show", client_id=request.view_args["client_id"]), "Back to the client")
        body = render_template("errors/error.html", title="Too many previews", message=message, back=back)
    # Flask's own response class: Flask-Limiter takes no other as the limit's answer.
    return make_response(body, 429, {"Retry-After": str(seconds)})


@bp.post("/clients/<int:client_id>/emails/preview")
@clinic_staff_required
# Each preview keeps its HTML part (up to ~80 KB) in Redis for 15 minutes: bound them per user.
@limiter.limit(
    lambda: current_app.config["PREVIEW_RATE_LIMIT"], key_func=_previewer, on_breach=_too_many_previews
)
def preview(client_id: int) -> str | Response | tuple[str, int]:
    """Show the email the form would send (subject, HTML part, text part) without sending it."""
    client, clinic, form = _compose_form(client_id)
    rendered = None
    if form.validate_on_submit():
        try:
            rendered = sending.render_for(client, clinic, form.kind.data, form.compose())
        except email_content.CannotCompose as cannot:
            form.kind.errors.append(str(cannot))
    if rendered is None:
        return _form_again(client, form)
    frame_url = _keep_for_frame(client, rendered.body_html)
    if htmx:
        return render_template(
            "clients/_preview.html", client=client, preview=rendered, frame_url=frame_url, oob_status=True
        )
    context = _page_context(client)
    return render_template(
        "clients/show.html", client=client, form=form, preview=rendered, frame_url=frame_url, **context
    )


@bp.get("/clients/<int:client_id>/emails/preview/<token>")
@clinic_staff_required
def preview_html(client_id: int, token: str) -> Response:
    """The HTML part of a preview, for its sandboxed frame (only to whoever previewed it)."""
    clients.get_client(current_clinic_id(), client_id) or abort(404)
    if not _TOKEN.match(token):
        abort(404)
    try:
        html = current_app.extensions["redis"].get(_preview_key(client_id, token))
    except RedisError:
        html = None
    if html is None:
        return framed_email(
            '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Preview expired</title>'
            "</head><body><p>This preview has expired: press Preview again.</p></body></html>"
        )
    return framed_email(html.decode() if isinstance(html, bytes) else html)


@bp.post("/clients/<int:client_id>/emails/lines")
@clinic_staff_required
def add_receipt_line(client_id: int) -> str | tuple[str, int]:
    """Show the send form again, as typed, with one more receipt line (nothing is checked or sent)."""
    client, _clinic, form = _compose_form(client_id)
    if not form.add_line():
        form.lines_error = f"A receipt has at most {len(form.lines.entries)} lines."
    context = _page_context(client)
    if htmx:
        return render_template("clients/_send_form.html", client=client, form=form, **context)
    return render_template("clients/show.html", client=client, form=form, **context)


def _form_again(client: Client, form: SendEmailForm) -> tuple[str, int] | Response:
    """The send form with what is wrong (422); in place of the whole form for htmx."""
    context = _page_context(client)
    if htmx:
        response = Response(
            render_template("clients/_send_form.html", client=client, form=form, **context), status=422
        )
        response.headers["HX-Retarget"] = "#send-email"
        response.headers["HX-Reswap"] = "outerHTML"
        return response
    return render_template("clients/show.html", client=client, form=form, **context), 422


def _preview_key(client_id: int, token: str) -> str:
    return redis_key("email-preview", current_user.id, client_id, token)


def _keep_for_frame(client: Client, html: str) -> str | None:
    """Keep a preview's HTML part for its frame; return the frame's address (None without Redis)."""
    token = secrets.token_hex(16)
    try:
        current_app.extensions["redis"].set(_preview_key(client.id, token), html, ex=PREVIEW_SECONDS)
    except RedisError as error:
        log.warning("could not keep a preview for its frame: %s", error)
        return None
    return url_for("clients.preview_html", client_id=client.id, token=token)
