"""SendGrid's v3 API, simulated: the WSGI app the real adapter talks to.

It answers the requests the adapter makes (Mail Send, Email Activity, spam reports and bounces)
in SendGrid's documented shapes, so the adapter runs unchanged through `httpx.WSGITransport` or
over real HTTP. What happens to each message comes from webapp.sandbox.scenarios.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from webapp.event_kinds import EventKind
from webapp.sandbox import scenarios, tracking
from webapp.sandbox.base import Pending, PostedKeys, Simulator
from webapp.sandbox.scenarios import CLIENT_IP, MX_SERVER, SANDBOX_IP, USER_AGENT, Visible
from webapp.sandbox.sendgrid import validation, webhooks
from webapp.sandbox.store import SimMessage

FORBIDDEN_KEY = "sandbox-forbidden"  # an API key the sandbox answers with 403
MAX_BODY_BYTES = 30 * 1024 * 1024
RATE_LIMIT = 600  # requests a minute, only reported in the X-RateLimit-* headers

# Step kinds -> Email Activity event names.
POLLED_NAMES: dict[EventKind, str] = {
    EventKind.PROCESSED: "processed",
    EventKind.DELIVERED: "delivered",
    EventKind.DEFERRED: "deferred",
    EventKind.DROPPED: "dropped",
    EventKind.BOUNCED: "bounced",
    EventKind.OPENED: "opened",
    EventKind.CLICKED: "clicked",
    EventKind.REPORTED_AS_SPAM: "spam_report",
}

URLS = Map(
    [
        Rule("/v3/mail/send", endpoint="mail_send", methods=["POST"]),
        Rule("/v3/messages", endpoint="list_messages", methods=["GET"]),
        Rule("/v3/messages/<msg_id>", endpoint="message_detail", methods=["GET"]),
        Rule("/v3/suppression/spam_reports", endpoint="list_spam_reports", methods=["GET"]),
        Rule("/v3/suppression/spam_reports/<email>", endpoint="spam_report", methods=["GET", "DELETE"]),
        Rule("/v3/suppression/bounces", endpoint="list_bounces", methods=["GET"]),
    ]
)


class SendGridSandbox(Simulator):
    """A WSGI app that answers like SendGrid's v3 API and posts signed event webhooks."""

    wire_format = "sendgrid"
    api_prefix = "/v3/"
    send_path = "/v3/mail/send"

    def __init__(self, state_path: str, **kwargs: Any) -> None:
        super().__init__(state_path, **kwargs)
        self.signing_key = webhooks.SigningKey(self.store)
        self.signing_key.private()  # made now, so every process of this state file shares one

    @property
    def public_key_b64(self) -> str:
        """The webhook verification key: base64 DER SubjectPublicKeyInfo, as SendGrid shows it."""
        return self.signing_key.public_b64()

    def webhook_posts(
        self, pending: list[Pending], now: float
    ) -> Iterator[tuple[bytes, dict[str, str], PostedKeys]]:
        """Signed batches of events, as SendGrid's Event Webhook posts them; what it never posts is
        marked done."""
        for body, headers, keys in webhooks.batches(pending, self.signing_key, now):
            if body:
                yield body, headers, keys
            else:
                self.store.mark_posted(keys, scenarios.timeline_length)

    # WSGI

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        """Answer one request the way SendGrid's v3 API would."""
        return self._respond(Request(environ))(environ, start_response)

    def _respond(self, request: Request) -> Response:
        """Route one request, after counting it and applying any queued failure."""
        now = self.clock()
        admission = self.admit(request.path, now)
        reset = (int(now // 60) + 1) * 60
        rate_headers = {
            "X-RateLimit-Limit": str(RATE_LIMIT),
            "X-RateLimit-Remaining": str(max(0, RATE_LIMIT - admission.used)),
            "X-RateLimit-Reset": str(reset),
        }
        if admission.failure_status is not None:
            response = _failure_response(admission.failure_status)
            if admission.failure_status == 429:
                wait = int(admission.retry_after) if admission.retry_after is not None else 60
                rate_headers.update({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(now) + wait)})
        else:
            response = _auth_error(request) or self._dispatch(request, now)
        response.headers.update(rate_headers)
        return response

    def _dispatch(self, request: Request, now: float) -> Response:
        """Call the handler of the matched endpoint."""
        try:
            endpoint, args = URLS.bind_to_environ(request.environ).match()
        except HTTPException as error:
            message = "not found" if error.code == 404 else (error.name or "error").lower()
            return _errors(error.code or 400, [{"message": message, "field": None}])
        handler: Callable[..., Response] = getattr(self, f"_{endpoint}")
        return handler(request, now, **args)

    # Mail Send

    def _mail_send(self, request: Request, now: float) -> Response:
        """Validate a Mail Send body, record one message per recipient, answer 202 with X-Message-Id."""
        if (request.content_length or 0) > MAX_BODY_BYTES:
            return _errors(413, [{"message": "content too large", "field": None}])
        data = request.get_data()
        if len(data) > MAX_BODY_BYTES:
            return _errors(413, [{"message": "content too large", "field": None}])
        try:
            payload = json.loads(data)
        except ValueError:
            payload = None
        problems = validation.mail_send_errors(payload)
        if problems:
            return _errors(400, problems)
        x_message_id = secrets.token_urlsafe(16)
        _, lost = self.accept(_messages(payload, x_message_id, now), request.path)
        if lost:
            return _failure_response(500)
        return Response(status=202, headers={"X-Message-Id": x_message_id})

    # Email Activity

    def _list_messages(self, request: Request, now: float) -> Response:
        """GET /v3/messages: the messages matching a query that have at least one event so far."""
        try:
            terms = validation.parse_query(request.args.get("query", ""))
            limit = validation.int_arg(request, "limit", 10, 1, 1000)
        except ValueError as error:
            return _errors(400, [{"message": f"invalid syntax: {error}"}])
        listed: list[dict[str, Any]] = []
        for message in self.store.messages_where(*validation.where(terms)):
            events = self.visible(message, now)
            if events:
                listed.append(_summary(message, events))
            if len(listed) >= limit:
                break
        return _json(200, {"messages": listed})

    def _message_detail(self, request: Request, now: float, msg_id: str) -> Response:
        """GET /v3/messages/{msg_id}: one message with its events, in Email Activity's names."""
        message = self.store.message(msg_id)
        events = self.visible(message, now) if message else []
        if message is None or not events:
            return _errors(404, [{"message": "not found", "field": "message_id"}])
        return _json(
            200,
            {
                **_summary(message, events),
                "template_id": "",
                "teammate": "",
                "api_key_id": "sandbox",
                "categories": list(message.categories),
                # Email Activity gives custom args back as Python-dict-like text, not as an object.
                "unique_args": repr({str(key): str(value) for key, value in message.custom_args.items()}),
                "originating_ip": CLIENT_IP,
                "outbound_ip": SANDBOX_IP,
                "outbound_ip_type": "shared",
                "events": [_polled_event(event) for event in events if event.step.event in POLLED_NAMES],
            },
        )

    # Suppressions

    def _list_spam_reports(self, request: Request, now: float) -> Response:
        """GET /v3/suppression/spam_reports."""
        return self._suppression_list(request, now, self.store.spam_reports)

    def _list_bounces(self, request: Request, now: float) -> Response:
        """GET /v3/suppression/bounces."""
        return self._suppression_list(request, now, self.store.bounces)

    def _suppression_list(self, request: Request, now: float, entries: Callable[..., list[Any]]) -> Response:
        """List entries of a suppression list, filtered and paged as SendGrid does."""
        try:
            start = validation.int_arg(request, "start_time", 0, 0, None)
            end = validation.int_arg(request, "end_time", int(now), 0, None)
            limit = validation.int_arg(request, "limit", 500, 1, 500)
            offset = validation.int_arg(request, "offset", 0, 0, None)
        except ValueError as error:
            return _errors(400, [{"message": str(error), "field": None}])
        # Entries dated in the future belong to scenarios whose report has not happened yet.
        rows = entries(request.args.get("email", ""), start, min(end, int(now)), limit, offset)
        return _json(200, rows)

    def _spam_report(self, request: Request, now: float, email: str) -> Response:
        """GET or DELETE /v3/suppression/spam_reports/{email}."""
        email = email.strip().lower()
        if request.method == "DELETE":
            self.store.remove_spam_report(email)
            return Response(status=204)
        rows = [row for row in self.store.spam_reports(email, end=int(now)) if row["email"] == email]
        return _json(200, rows)


def _tracking(payload: dict[str, Any], text: str, html: str) -> tracking.Tracking:
    """What SendGrid tracks in a message: a setting left out is the account's, on in the sandbox
    (as on a new SendGrid account); click tracking rewrites the text part's links only with
    enable_text."""
    settings = validation.json_object(payload.get("tracking_settings"))
    opens = validation.json_object(settings.get("open_tracking"))
    clicks = validation.json_object(settings.get("click_tracking"))
    click_on = clicks.get("enable", True) is True
    return tracking.tracking(
        html,
        text,
        opens=opens.get("enable", True) is True,
        html_links=click_on,
        text_links=click_on and clicks.get("enable_text") is True,
    )


def _messages(payload: dict[str, Any], x_message_id: str, now: float) -> list[SimMessage]:
    """One message per recipient of a valid Mail Send body, each on the scenario its address asks for."""
    categories = tuple(validation.strings(payload.get("categories")))
    text = next((part["value"] for part in payload["content"] if part.get("type") == "text/plain"), "")
    html = next((part["value"] for part in payload["content"] if part.get("type") == "text/html"), "")
    tracked = _tracking(payload, text, html)
    messages = []
    for personalization in payload["personalizations"]:
        sender = personalization.get("from")
        if not isinstance(sender, dict) or not validation.valid_email(sender.get("email")):
            sender = payload["from"]
        subject = personalization.get("subject") or payload.get("subject")
        custom_args = {
            **validation.json_object(payload.get("custom_args")),
            **validation.json_object(personalization.get("custom_args")),
        }
        for recipient in personalization["to"]:
            email = recipient["email"].strip().lower()
            messages.append(
                SimMessage(
                    msg_id=f"{x_message_id}.filterdrecv-sandbox-{len(messages)}",
                    request_id=x_message_id,
                    to_email=email,
                    from_email=sender["email"],
                    subject=subject,
                    categories=categories,
                    custom_args=custom_args,
                    accepted_at=now,
                    scenario=scenarios.scenario_for(email),
                    text=text,
                    html=html,
                    opens_tracked=tracked.opens,
                    links=tracked.links,
                )
            )
    return messages


# Rendering


def _iso(unix_seconds: int) -> str:
    """Format a unix time as Email Activity does: ISO 8601, UTC, with a Z."""
    return datetime.fromtimestamp(unix_seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _summary(message: SimMessage, events: list[Visible]) -> dict[str, Any]:
    """The Email Activity list entry of a message."""
    names = {event.step.event for event in events}
    if names & {EventKind.BOUNCED, EventKind.DROPPED}:
        status = "not_delivered"
    elif EventKind.DELIVERED in names:
        status = "delivered"
    else:
        status = "processed"
    return {
        "from_email": message.from_email,
        "msg_id": message.msg_id,
        "subject": message.subject,
        "to_email": message.to_email,
        "status": status,
        "opens_count": sum(event.step.event == EventKind.OPENED for event in events),
        "clicks_count": sum(event.step.event == EventKind.CLICKED for event in events),
        "last_event_time": _iso(max(event.at for event in events)),
    }


def _polled_event(event: Visible) -> dict[str, Any]:
    """One event as Email Activity shows it (its own names, no machine-open flag)."""
    step = event.step
    polled: dict[str, Any] = {"event_name": POLLED_NAMES[step.event], "processed": _iso(event.at)}
    dropped = step.event == EventKind.DROPPED
    reason = webhooks.DROP_TEXT.get(step.reject or "", "Invalid") if dropped else step.reason
    if reason:
        polled["reason"] = reason
    if step.attempt is not None:
        polled["attempt_num"] = step.attempt
    if step.url:
        polled["url"] = step.url
    if step.event == EventKind.BOUNCED:
        polled["bounce_type"] = "hard"
    if step.event in (EventKind.DELIVERED, EventKind.DEFERRED, EventKind.BOUNCED):
        polled["mx_server"] = MX_SERVER
    if step.event in (EventKind.OPENED, EventKind.CLICKED):
        polled["http_user_agent"] = USER_AGENT
    return polled


def _json(status: int, body: Any) -> Response:
    """A JSON response."""
    return Response(json.dumps(body), status=status, mimetype="application/json")


def _errors(status: int, errors: list[dict[str, Any]]) -> Response:
    """An error response in SendGrid's {"errors": [...]} shape."""
    return _json(status, {"errors": errors})


def _failure_response(status: int) -> Response:
    """The documented error body for an injected failure."""
    if status == 429:
        return _errors(429, [{"message": "too many requests", "field": None}])
    if status >= 500:
        return _errors(status, [{"message": "internal error", "field": None}])
    return _errors(status, [{"message": "error", "field": None}])


def _auth_error(request: Request) -> Response | None:
    """401 without a bearer key, 403 for the forbidden one, else None."""
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        return _errors(401, [{"message": "authorization required", "field": None}])
    if key.strip() == FORBIDDEN_KEY:
        return _errors(403, [{"message": "access forbidden", "field": None}])
    return None
