"""Help views: the whole guide, and the panel for one status."""

from __future__ import annotations

from flask import abort, current_app, render_template
from flask_login import current_user, login_required

from webapp import statuses
from webapp.extensions import htmx
from webapp.help import bp
from webapp.help.guide import GUIDE, REMOVAL_FLOW, REMOVAL_WHY, stuck_email_steps
from webapp.models import utcnow
from webapp.params import id_arg
from webapp.security import current_clinic_id
from webapp.services import clients, next_steps
from webapp.services.filed_as_spam import filed_as_spam


@bp.get("/help")
@login_required
def index() -> str:
    """Show the whole guide to delivery statuses."""
    return render_template("help/index.html", statuses=statuses.ALL, guide=GUIDE, **_support())


@bp.get("/help/statuses/<key>")
@login_required
def status(key: str) -> str:
    """Show the help for one status: the panel beside the log, or a page of its own."""
    if key not in statuses.BY_KEY:
        abort(404)
    template = "help/_panel.html" if htmx and not htmx.history_restore_request else "help/status.html"
    email = None
    steps: tuple[str, ...] = ()
    filed_at = None
    email_id = id_arg("email")
    if email_id is not None and current_user.role in ("clinician", "owner"):
        # The panel opened from a row names that row's email (and its reference for support), and
        # says what to do about it when it is stuck, as the row does.
        email = clients.get_email(current_clinic_id(), email_id) or abort(404)
        now = utcnow()
        if next_steps.is_stuck(email, now):
            steps = stuck_email_steps(email.reference, next_steps.support_now(email, now))
        filed_at = filed_as_spam([email.id]).get(email.id)
    return render_template(
        template,
        status=statuses.get(key),
        entry=GUIDE[key],
        email=email,
        email_steps=steps,
        filed_at=filed_at,
        **_support(),
    )


def _support() -> dict:
    return {
        "support_address": current_app.config["SUPPORT_ADDRESS"],
        "removal_flow": REMOVAL_FLOW,
        "removal_why": REMOVAL_WHY,
    }
