"""Help views: the whole guide, and the panel for one status."""

from __future__ import annotations

from flask import abort, current_app, render_template
from flask_login import login_required

from webapp import statuses
from webapp.extensions import htmx
from webapp.help import bp
from webapp.help.guide import GUIDE, REMOVAL_FLOW, REMOVAL_WHY


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
    return render_template(template, status=statuses.get(key), entry=GUIDE[key], **_support())


def _support() -> dict:
    return {
        "support_address": current_app.config["SUPPORT_ADDRESS"],
        "removal_flow": REMOVAL_FLOW,
        "removal_why": REMOVAL_WHY,
    }
