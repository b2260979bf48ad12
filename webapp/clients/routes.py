"""Client list, client file, email log and sending."""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Iterator
from datetime import datetime
from typing import NoReturn

from flask import (
    abort,
    current_app,
    flash,
    make_response,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_login import current_user
from werkzeug.exceptions import MethodNotAllowed
from werkzeug.wrappers import Response

from webapp import clock, statuses
from webapp.clients import bp
from webapp.clients.forms import AddressForm, SendEmailForm
from webapp.extensions import db, htmx, limiter
from webapp.freshness import counters, quota, row_cache, stream
from webapp.freshness.fastpoll import POLL_ROLES
from webapp.models import Client, utcnow
from webapp.params import id_list, page_number
from webapp.security import clinic_staff_required, current_clinic_id, session_data_is_live
from webapp.services import accounts, addresses, clients, log_rows
from webapp.services.address_health import AddressHealth, address_health
from webapp.services.next_steps import next_change, resend_to_file
from webapp.templating import clinic_timezone


@bp.get("/clients")
@clinic_staff_required
def index() -> str:
    """List the clinic's clients, with a search by name or email."""
    query = request.args.get("q", "").strip()[:200]
    page = page_number()
    pagination = clients.search(current_clinic_id(), query, page)
    health = address_health(pagination.items, utcnow())
    partial = bool(htmx) and not htmx.history_restore_request
    template = "clients/_list.html" if partial else "clients/index.html"
    return render_template(template, pagination=pagination, health=health, query=query, oob=partial)


@bp.get("/clients/<int:client_id>")
@clinic_staff_required
def show(client_id: int) -> str:
    """Show a client's file: contact details, address health, the email log and the send form."""
    client = clients.get_client(current_clinic_id(), client_id) or abort(404)
    return render_template("clients/show.html", client=client, form=SendEmailForm(), **_page_context(client))


@bp.post("/clients/<int:client_id>/address")
@clinic_staff_required
def correct_address(client_id: int) -> Response | tuple[str, int]:
    """Save a corrected email address in the client file (audited)."""
    client = clients.get_client(current_clinic_id(), client_id) or abort(404)
    form = AddressForm()
    if form.validate_on_submit():
        old = client.email
        if addresses.correct_address(client, form.email.data, current_user):
            db.session.commit()
            flash(f"Saved {client.email} as {client.name}’s email address (was {old}).", "success")
        else:
            flash(f"{client.name}’s email address was already {old}.", "success")
        return redirect(url_for("clients.show", client_id=client.id), code=303)
    context = _page_context(client, address_form=form)
    return render_template(
        "clients/show.html", client=client, form=SendEmailForm(formdata=None), **context
    ), 422


@bp.get("/clients/<int:client_id>/emails")
@limiter.exempt
def email_log(client_id: int) -> Response | tuple[str, int]:
    """Return the email log partial; an unchanged poll was answered 204 in front of Flask
    (webapp/freshness/fastpoll.py), so every poll that reaches the view is rendered."""
    return _render_email_log(client_id)


@bp.get("/clients/<int:client_id>/emails/stream")
def email_stream(client_id: int) -> Response:
    """Tell an open email log each time it changes (text/event-stream); the browser then fetches it."""
    # A doorbell, not data: the log itself comes through email_log, which decides what is shown.
    if not current_user.is_authenticated:
        abort(401)  # not the login redirect: a stream has no page to send there
    if request.args:
        abort(400)  # it takes no parameters
    if request.method != "GET":
        raise MethodNotAllowed(["GET"])  # HEAD would register a stream whose body never runs
    if current_user.role not in POLL_ROLES:
        abort(404)
    client = clients.get_client(current_clinic_id(), client_id) or abort(404)
    lifetime = current_app.config["LOG_STREAM_SECONDS"]
    if not lifetime:
        abort(404)
    feed = current_app.extensions["log_feed"]
    # The feed ends the stream when the server ends the session (sign-out, everywhere, deactivation).
    live_key = accounts.live_key(session.get("sid", ""))
    try:
        subscription = feed.open(counters.log_channel(client.clinic_id, client.id), live_key)
    except stream.TooManyStreams:
        _refuse_stream(429)  # each stream holds a connection: this process keeps the rest for others
    if subscription is None:
        _refuse_stream(503)  # Redis does not answer: the browser polls
    # Nor may one user take them all, however many sessions or processes they use.
    redis, user_id, token = current_app.extensions["redis"], current_user.id, secrets.token_hex(8)
    limit = current_app.config["LOG_STREAMS_PER_USER"]
    counted = quota.claim(redis, user_id, token, clock.timestamp(), lifetime, limit)
    if not counted:
        feed.close(subscription)
        _refuse_stream(503 if counted is None else 429)

    app = current_app._get_current_object()  # type: ignore[attr-defined]

    def done() -> None:
        if feed.close(subscription):
            quota.release(redis, user_id, token, app)  # after the request: no current_app

    snapshot = dict(session)
    heartbeat = current_app.config["LOG_STREAM_HEARTBEAT_SECONDS"]

    def still_live() -> bool:
        # The session's own timeouts: an idle or too old session ends its streams too.
        return session_data_is_live(snapshot, time.time())

    def body() -> Iterator[str]:
        try:
            yield from stream.events(subscription, lifetime, still_live, heartbeat=heartbeat)
        finally:
            done()

    # Flask ends the request (and its database session) before the body is read: a stream holds
    # no database connection.
    response = Response(body(), mimetype="text/event-stream")
    # Also when the body never starts (the browser left at once): a generator closed before its
    # first step skips its finally.
    response.call_on_close(done)
    response.headers["X-Accel-Buffering"] = "no"  # a proxy in front must pass each event at once
    return response


def _refuse_stream(code: int) -> NoReturn:
    """Refuse a stream; the browser polls the log instead and tries a stream again in a minute."""
    abort(Response("", status=code, headers={"Retry-After": "60"}))


@clinic_staff_required
def _render_email_log(client_id: int) -> Response:
    client, spam = clients.get_client_and_spam_entry(current_clinic_id(), client_id) or abort(404)
    accounts.keep_live(session.get("sid", ""), session.get("login_at", 0))  # the database just confirmed it
    context = _log_context(client, spam)
    # The banner, the header's mark and the send form depend on the log (a spam report, a lifted
    # block): they are refreshed with it. The form only when sending became possible or impossible
    # (or the address changed), so a clinician's half-typed message is never wiped by a poll.
    shown_form = request.args.get("f")
    form_oob = shown_form is not None and shown_form != context["form_key"]
    response = make_response(
        render_template(
            "clients/_email_log.html",
            client=client,
            banner_oob=True,
            form_oob=form_oob,
            form=SendEmailForm(formdata=None) if form_oob else None,
            **context,
        )
    )
    if request.headers.get("HX-Trigger") == "log-filter":
        # The filter belongs in the page's address, so a reload or a shared link keeps it.
        response.headers["HX-Push-Url"] = url_for(
            "clients.show", client_id=client.id, status=context["status_filter"] or None
        )
    return response


def _page_context(client: Client, address_form: AddressForm | None = None) -> dict:
    """Everything the client file needs besides the send form."""
    if address_form is None:
        address_form = AddressForm(formdata=None, email=client.email)
    return {"address_form": address_form, **_log_context(client)}


def _log_context(client: Client, spam: dict | None = None) -> dict:
    """Everything the email log partial needs, including when the browser should ask again
    (`spam`: the spam-list entry of the client's address by address, when already read)."""
    now = utcnow()
    clinic_id = current_clinic_id()
    client_id = client.id
    status_key = request.args.get("status", "")
    status_filter = status_key if status_key in statuses.BY_KEY else ""
    # Read before the log: a change committed meanwhile bumps the counter past it, so the next
    # poll renders again.
    marker = counters.current_marker(clinic_id, client_id)
    # The browser says which rows it has open: their timelines come with the log, fresh, so a
    # refresh keeps them open without a request each; every other timeline is fetched when opened.
    open_ids = id_list("open", log_rows.MAX_OPEN_TIMELINES)
    zone = clinic_timezone() or "UTC"
    rows = log_rows.email_log(clinic_id, client_id, status_filter or None, now, zone, open_ids)
    # The unfiltered log holds the client's newest email: its address health needs no query for it.
    health = address_health([client], now, None if status_filter else rows, spam)[client.id]
    for row in rows:
        if row.failure and not (row.resent or row.superseded_by):
            row.resend_to = resend_to_file(row.email, client.email, health.blocked)
    config = current_app.config
    soon = any(row.status.can_change_soon for row in rows)
    # The browser may be told "unchanged" only until the next time-driven change (a row going
    # stuck, or stuck past the hour) and at most a minute, so relative times and a lost Redis bump
    # never go stale for long.
    fresh_until = now.timestamp() + 60
    deadline = next_change((row.email for row in rows), now)
    if deadline is not None:
        fresh_until = min(fresh_until, deadline.timestamp())
    timeline_url = _url_pattern("emails.timeline", "email_id")
    as_sent_url = _url_pattern("emails.as_sent", "email_id")
    help_index_url = url_for("help.index")
    # Rows rendered before, by what they were rendered from: the row's own key, and the time zone
    # and URLs of this request (the only other things a row without notices shows). Looked up
    # here: a call per row costs the template more than the lookup itself.
    kept_rows = row_cache.rows(current_app).for_request((zone, help_index_url, timeline_url, as_sent_url))
    for row in rows:
        row.html = kept_rows.get(row.cache_key)
    return {
        "health": health,
        "form_key": _form_key(client, health),
        "rows": rows,
        "now": now,
        "status_filter": status_filter,
        "statuses": statuses.ALL,
        "poll_seconds": config["LOG_POLL_FAST_SECONDS"] if soon else config["LOG_POLL_SLOW_SECONDS"],
        "version": counters.log_version(marker, fresh_until),
        "stream_url": url_for("clients.email_stream", client_id=client_id)
        if config["LOG_STREAM_SECONDS"]
        else None,
        "stream_poll_seconds": _stream_poll_seconds(now, deadline),
        # Built once, not once per row (url_for costs about as much as a row's other values).
        "help_index_url": help_index_url,
        "help_status_urls": {
            status.help_key: url_for("help.status", key=status.help_key) for status in statuses.ALL
        },
        "resend_url": _url_pattern("emails.resend", "email_id"),
        "timeline_url": timeline_url,
        "as_sent_url": as_sent_url,  # each row's "View the email as sent"
        # Each rendered row's link for a browser without JavaScript (a dict lookup costs the
        # template less than a call per row); a row from the cache has it already.
        "timeline_urls": {row.email.id: timeline_url.format(row.email.id) for row in rows if not row.html},
        "log_rows": kept_rows,
    }


def _stream_poll_seconds(now: datetime, stuck_deadline: datetime | None) -> int:
    """How long a log whose stream is open waits before it asks again by itself."""
    # Its stream announces every stored change, and the browser keeps relative times current:
    # only a row turning stuck with time, and a change whose announcement was lost, need a poll.
    seconds = current_app.config["LOG_POLL_STREAM_SECONDS"]
    if stuck_deadline is not None:
        seconds = min(seconds, int(stuck_deadline.timestamp() - now.timestamp()) + 1)
    return max(1, seconds)


def _url_pattern(endpoint: str, argument: str) -> str:
    """Return the endpoint's URL with `{}` where the integer argument goes (for str.format)."""
    marker = 918273645  # any integer that cannot appear elsewhere in the URL
    return url_for(endpoint, **{argument: marker}).replace(str(marker), "{}")


def _form_key(client: Client, health: AddressHealth) -> str:
    """Name what the send form shows (possible or not, and to which address) without the address."""
    address = hashlib.sha256(client.email.strip().lower().encode()).hexdigest()[:8]
    return ("blocked-" if health.blocked else "open-") + address
