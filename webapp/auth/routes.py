"""Login and logout views."""

from __future__ import annotations

from flask import current_app, flash, make_response, redirect, render_template, session, url_for
from flask_limiter.util import get_remote_address
from flask_login import current_user, login_required, login_user, logout_user
from werkzeug.wrappers import Response

from webapp.auth import bp
from webapp.auth.forms import LoginForm
from webapp.extensions import limiter
from webapp.models import User
from webapp.security import SIGNED_OUT, safe_next, signed_out
from webapp.services import accounts


def _address_limit() -> str:
    return current_app.config["LOGIN_ADDRESS_RATE_LIMIT"]


def _failed(response: Response) -> bool:
    """Only failed sign-ins count against an address: a clinic's staff may share one."""
    return response.status_code != 302


@bp.get("/")
def index() -> Response:
    """Send people to where they work."""
    if not current_user.is_authenticated:
        return redirect(url_for("auth.login_form"))
    if current_user.role == "support":
        return redirect(url_for("support.queue"))
    return redirect(url_for("attention.index"))


@bp.get("/login")
def login_form() -> str | Response:
    """Show the login form."""
    if current_user.is_authenticated:
        return redirect(url_for("auth.index"))
    # Said each time until the next sign-in: every tab that lands here learns why.
    notice = SIGNED_OUT.get(session.get("signed_out", ""))
    return render_template("auth/login.html", form=LoginForm(), notice=notice)


@bp.post("/login")
@limiter.limit(_address_limit, methods=["POST"], deduct_when=_failed)
def login() -> str | Response | tuple[str, int]:
    """Check the credentials and start a new session."""
    form = LoginForm()
    if not form.validate_on_submit():
        return render_template("auth/login.html", form=form), 400
    try:
        user = accounts.authenticate(form.email.data or "", form.password.data or "", get_remote_address())
    except accounts.TooSoon as too_soon:
        flash(f"Too many failed attempts: please wait {too_soon.seconds} seconds and try again.", "error")
        response = make_response(render_template("auth/login.html", form=form), 429)
        response.headers["Retry-After"] = str(too_soon.seconds)
        return response
    if user is None:
        flash("That email and password do not match an account.", "error")
        return render_template("auth/login.html", form=form), 401
    # Read before the session is replaced: nothing else of the pre-login session survives.
    next_url = safe_next(session.get("next_url"))
    _sign_in(user)
    return redirect(next_url or url_for("auth.index"))


def _sign_in(user: User) -> None:
    """Begin a fresh browser session for the user (a new session, never the pre-login one)."""
    session.clear()
    login_user(user)
    sid, login_at = accounts.start_session(user)
    session["sid"] = sid
    session["login_at"] = login_at
    session["seen_at"] = login_at
    session["clinic_id"] = user.clinic_id
    session["role"] = user.role
    session.permanent = True


@bp.post("/logout")
@login_required
def logout() -> Response:
    """End the session, on the server too: a copy of the cookie stops working."""
    accounts.end_session(session.get("sid", ""))
    logout_user()
    signed_out("here")
    return redirect(url_for("auth.login_form"))


@bp.post("/logout/everywhere")
@login_required
def logout_everywhere() -> Response:
    """End every session of the signed-in user, on every device."""
    accounts.sign_out_everywhere(current_user)
    logout_user()
    signed_out("everywhere")
    return redirect(url_for("auth.login_form"))
