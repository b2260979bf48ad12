"""Sessions, access rules and response headers shared by every blueprint."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import wraps
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, abort, redirect, request, session, url_for
from flask_limiter.errors import RateLimitExceeded
from flask_login import current_user, logout_user
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import MethodNotAllowed, SecurityError, ServiceUnavailable
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.wrappers import Response

from webapp import post_only
from webapp.extensions import htmx, limiter, login_manager
from webapp.models import User
from webapp.services import accounts
from webapp.services.accounts import ABSOLUTE_TIMEOUT_SECONDS, IDLE_TIMEOUT_SECONDS

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)


# A copy of an email's HTML part, shown in a sandboxed frame of the app's own pages: nothing of it
# runs or loads (no script, no remote image, so no tracking pixel fires; no form posts; only its
# inline CSS and embedded images), it has no origin of its own, and only the app may frame it.
def init_app(app: Flask) -> None:
    """Wire session timeouts, the login redirect and security headers into the app."""
    proxies = app.config.get("TRUSTED_PROXIES", 0)
    if proxies:
        # Only the proxies we run may say who the client is: the address keys login throttling.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=proxies, x_proto=proxies)  # type: ignore[method-assign]
    app.permanent_session_lifetime = ABSOLUTE_TIMEOUT_SECONDS
    login_manager.session_protection = "basic"
    login_manager.user_loader(_load_user)
    login_manager.unauthorized_handler(_unauthorized)
    app.before_request(_enforce_session_timeouts)
    app.after_request(_security_headers)
    register_error_pages(app)


# Why this browser is signed out, kept in its session (under "signed_out") until the next sign-in
# and said on the sign-in page: a tab that finds itself there knows what happened.
SIGNED_OUT = {
    "here": "You are signed out.",
    "everywhere": "You are signed out on every device (“Sign out everywhere” was used, here or on "
    "another device).",
    "ended": "You were signed out: this session was ended from another tab or device.",
    "deactivated": "You were signed out: your account has been deactivated. Ask your clinic’s owner "
    "if you still need it.",
    "changed": "You were signed out because your account changed. Please sign in again.",
    "idle": f"You were signed out after {IDLE_TIMEOUT_SECONDS // 60} minutes without activity.",
    "expired": f"You were signed out: a session lasts at most {ABSOLUTE_TIMEOUT_SECONDS // 3600} hours.",
}


def signed_out(reason: str) -> None:
    """Forget the session (the server ended it, or it timed out) and remember why (SIGNED_OUT)."""
    session.clear()
    session["signed_out"] = reason


def _load_user(user_id: str) -> User | None:
    # A session the server ended (sign-out, sign-out everywhere, deactivation) is over, copies too.
    user = accounts.session_user(int(user_id), session.get("sid", "")) if user_id.isdigit() else None
    # A session outlives neither its user, nor a deactivation, nor a move to another clinic or role.
    if user is None:
        signed_out(accounts.why_ended(int(user_id) if user_id.isdigit() else None, session.get("sid", "")))
        return None
    if not user.active or user.clinic_id != session.get("clinic_id") or user.role != session.get("role"):
        signed_out("changed" if user.active else "deactivated")
        return None
    return user


def session_is_live() -> bool:
    """Return whether the session belongs to a signed-in user and has not timed out (no database)."""
    return session_data_is_live(session, time.time())


def session_data_is_live(data: Any, now: float) -> bool:
    """Return whether session data belongs to a signed-in user and has not timed out."""
    return (
        "_user_id" in data
        and now - data.get("seen_at", 0) <= IDLE_TIMEOUT_SECONDS
        and now - data.get("login_at", 0) <= ABSOLUTE_TIMEOUT_SECONDS
    )


def is_background_poll() -> bool:
    """Return whether this request is the email log refreshing itself, not the user acting."""
    if request.endpoint == "clients.email_stream":
        return True  # an open log listening for changes keeps no idle session alive
    return bool(htmx) and request.headers.get("HX-Trigger") == "email-log"


def _enforce_session_timeouts() -> None:
    if "_user_id" not in session:
        return
    if not session_is_live():
        logout_user()
        too_old = time.time() - session.get("login_at", 0) > ABSOLUTE_TIMEOUT_SECONDS
        signed_out("expired" if too_old else "idle")
        return
    if not is_background_poll():
        session["seen_at"] = int(time.time())


def _unauthorized() -> Response:
    if htmx:
        # The page the request came from is where the tab was: back there after signing in.
        remember_next(_same_site_path(request.headers.get("HX-Current-URL", "")))
        # An htmx request must not swap the login form into the page: send the whole page there.
        # 204, not 401: htmx follows HX-Redirect either way, and the browser logs no error.
        response = Response("", status=204)
        response.headers["HX-Redirect"] = url_for("auth.login_form")
        return response
    if request.method == "GET":
        remember_next(request.full_path if request.query_string else request.path)
    return redirect(url_for("auth.login_form"))


def remember_next(path: str | None) -> None:
    """Keep a same-site path to return to after signing in (anything else is dropped)."""
    if safe_next(path):
        session["next_url"] = path


def safe_next(url: str | None) -> str | None:
    """Return `url` if it is a path on this site (never another site, however spelled), else None."""
    # Browsers drop tabs and newlines from a URL and read a backslash as a slash: "/<tab>/evil.example"
    # and "/\\evil.example" both lead to another site.
    if not url or not url.isprintable() or "\\" in url or not url.startswith("/") or url.startswith("//"):
        return None
    parts = urlsplit(url)
    return url if not parts.scheme and not parts.netloc else None


def _same_site_path(url: str) -> str | None:
    """The path (and query) of a full URL of this site, else None."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or parts.netloc != request.host:
        return None
    return parts.path + (f"?{parts.query}" if parts.query else "")


def _security_headers(response: Response) -> Response:
    headers = response.headers
    headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Referrer-Policy", "same-origin")
    headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    headers.setdefault("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
    if request.endpoint != "static":
        # Client data must not linger in shared caches or the browser's back-forward cache.
        headers["Cache-Control"] = "no-store"
        headers.add("Vary", "HX-Request")
        headers.add("Vary", "Cookie")
    if request.is_secure:
        headers.setdefault("Strict-Transport-Security", "max-age=31536000; includeSubDomains")
    return response


def security_headers_for_204() -> list[tuple[str, str]]:
    """The headers _security_headers gives an empty, non-static answer (for the log's fast path)."""
    return [
        ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
        ("X-Content-Type-Options", "nosniff"),
        ("X-Frame-Options", "DENY"),
        ("Referrer-Policy", "same-origin"),
        ("Cross-Origin-Opener-Policy", "same-origin"),
        ("Permissions-Policy", "camera=(), microphone=(), geolocation=()"),
        ("Cache-Control", "no-store"),
        ("Vary", "HX-Request"),
        ("Vary", "Cookie"),
    ]


def roles_required(*roles: str) -> Callable:
    """Allow a view only to signed-in users with one of these roles (404 for the others)."""

    def decorator(view: Callable) -> Callable:
        @wraps(view)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if not current_user.is_authenticated:
                return login_manager.unauthorized()
            if current_user.role not in roles:
                abort(404)
            return view(*args, **kwargs)

        return wrapped

    return decorator


clinic_staff_required = roles_required("clinician", "owner")
support_required = roles_required("support")
owner_required = roles_required("owner")


def current_clinic_id() -> int:
    """Return the signed-in user's clinic id: the only clinic id any query may use."""
    clinic_id = current_user.clinic_id
    if clinic_id is None:
        abort(404)
    return clinic_id


ERROR_PAGES = {
    400: ("Something in the request was wrong", "Please go back and try again."),
    403: ("Not allowed", "You do not have access to this page."),
    404: ("Not found", "This page does not exist, or you do not have access to it."),
    405: (
        "Use the button on the page",
        "This address does something (sends, saves or decides), so it works only from its button on "
        "the page: reloaded or opened from a bookmark, it does nothing. Nothing was done.",
    ),
    413: ("Too large", "What you sent is larger than we accept."),
    429: ("Too many attempts", "Please wait a few minutes before trying again."),
}
# A 405 for anything but GET: a form posted to a page's address, not a button's address opened.
NOT_ACCEPTED = (
    "Not accepted here",
    "This address does not take what was sent. Please go back and try again.",
)


def register_error_pages(app: Flask) -> None:
    """Show plain, kind error pages (a bare status for htmx requests)."""
    from flask import render_template

    def render(error: Any) -> tuple[str, int, dict[str, str]] | Response:
        if isinstance(error, RateLimitExceeded) and error.response is not None:
            return error.response  # a limit's own answer (its on_breach), such as the preview's
        code = getattr(error, "code", 500) or 500
        title, message = ERROR_PAGES.get(code, ("Something went wrong", "Please try again."))
        if code == 405 and request.method not in ("GET", "HEAD"):
            title, message = NOT_ACCEPTED
        headers = _retry_after(error)
        if isinstance(error, MethodNotAllowed) and error.valid_methods:
            headers["Allow"] = ", ".join(error.valid_methods)
        # An untrusted Host leaves no way to build URLs, so no page around the message.
        if htmx or isinstance(error, SecurityError):
            return message, code, headers
        back = post_only.back_link() if code == 405 and request.method == "GET" else None
        return render_template("errors/error.html", title=title, message=message, back=back), code, headers

    for code in ERROR_PAGES:
        app.register_error_handler(code, render)

    def busy(error: PoolTimeout) -> tuple[str, int, dict[str, str]]:
        # Every database connection of this process is in use (a burst of open logs refreshing
        # at once): a moment later there is one, so say so rather than fail.
        body, code, headers = render(ServiceUnavailable())
        return body, code, {**headers, "Retry-After": "5"}

    app.register_error_handler(PoolTimeout, busy)


def _retry_after(error: Any) -> dict[str, str]:
    """Say when a rate limit lets the client try again."""
    if not isinstance(error, RateLimitExceeded) or limiter.current_limit is None:
        return {}
    return {"Retry-After": str(max(1, int(limiter.current_limit.reset_at - time.time())))}
