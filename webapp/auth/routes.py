"""Login and logout views."""

from __future__ import annotations

from flask import current_app, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_required, logout_user
from werkzeug.wrappers import Response

from webapp.auth import bp
from webapp.auth.forms import LoginForm
from webapp.extensions import limiter
from webapp.services import accounts


def _login_attempt_account() -> str:
    """Rate-limit key: the account being tried, whatever address the attempts come from."""
    return "login-account:" + (request.form.get("email") or "").strip().lower()


def _account_limit() -> str:
    return current_app.config["LOGIN_RATE_LIMIT"]


def _address_limit() -> str:
    return current_app.config["LOGIN_ADDRESS_RATE_LIMIT"]


def _failed(response: Response) -> bool:
    """Only failed sign-ins count against an address: a clinic's staff may share one."""
    return response.status_code != 302


def _safe_next(url: str | None) -> str | None:
    """Return a same-site path to go back to, or None (never another site)."""
    if url and url.startswith("/") and not url.startswith(("//", "/\\")):
        return url
    return None


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
    return render_template("auth/login.html", form=LoginForm())


@bp.post("/login")
@limiter.limit(_address_limit, methods=["POST"], deduct_when=_failed)
@limiter.limit(_account_limit, methods=["POST"], key_func=_login_attempt_account)
def login() -> str | Response | tuple[str, int]:
    """Check the credentials and start a new session."""
    form = LoginForm()
    if not form.validate_on_submit():
        return render_template("auth/login.html", form=form), 400
    user = accounts.authenticate(form.email.data or "", form.password.data or "")
    if user is None:
        flash("That email and password do not match an account.", "error")
        return render_template("auth/login.html", form=form), 401
    # Read before the session is replaced: nothing else of the pre-login session survives.
    next_url = _safe_next(session.get("next_url"))
    accounts.start_session(user)
    return redirect(next_url or url_for("auth.index"))


@bp.post("/logout")
@login_required
def logout() -> Response:
    """End the session."""
    logout_user()
    session.clear()
    return redirect(url_for("auth.login_form"))
