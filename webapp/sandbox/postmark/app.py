"""Postmark's server API, simulated: the WSGI app the real Postmark adapter talks to.

It answers what the adapter asks (Email API single and batch, outbound message search and details,
bounces, the suppressions dump and delete) in Postmark's documented shapes, so the adapter runs
unchanged through `httpx.WSGITransport` or over real HTTP. What happens to each message comes from
webapp.sandbox.scenarios; Postmark's own ways are kept: a send to a suppressed address is refused
at once (422, ErrorCode 406), a batch answers 200 with one result per message in order, and a spam
complaint cannot be deleted from the suppression list (only Postmark's support can; the test
control `reactivate` plays it).
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from webapp.sandbox import scenarios
from webapp.sandbox.base import Pending, PostedKeys, Simulator
from webapp.sandbox.postmark import records, stored, validation, webhooks
from webapp.sandbox.store import SimMessage, Store

TOKEN_HEADER = "X-Postmark-Server-Token"
INVALID_TOKEN = "sandbox-invalid"  # a server token the sandbox refuses with 401
MAX_BODY_BYTES = 50 * 1024 * 1024
SEARCH_MAX_COUNT = 500
SEARCH_MAX_WINDOW = 10_000
MAX_SUPPRESSION_CHANGES = 50

ERROR_INVALID_TOKEN = 10
ERROR_INACTIVE_RECIPIENT = 406
ERROR_MESSAGE_NOT_FOUND = 701
ERROR_BOUNCE_NOT_FOUND = 407
CANNOT_CHANGE = "You do not have the required authority to change this suppression."
INACTIVE_TEXT = (
    "You tried to send to recipient(s) that have been marked as inactive. Found inactive addresses: "
    "{addresses}. Inactive recipients are ones that have generated a hard bounce, a spam complaint, "
    "or a manual suppression. "
)

URLS = Map(
    [
        Rule("/email", endpoint="send", methods=["POST"]),
        Rule("/email/batch", endpoint="send_batch", methods=["POST"]),
        Rule("/messages/outbound", endpoint="search", methods=["GET"]),
        Rule("/messages/outbound/<msg_id>/details", endpoint="details", methods=["GET"]),
        Rule("/bounces/<int:bounce_id>", endpoint="bounce", methods=["GET"]),
        Rule("/message-streams/<stream>/suppressions/dump", endpoint="suppressions", methods=["GET"]),
        Rule("/message-streams/<stream>/suppressions/delete", endpoint="unsuppress", methods=["POST"]),
    ]
)


class PostmarkSandbox(Simulator):
    """A WSGI app that answers like Postmark's server API and posts its webhooks."""

    wire_format = "postmark"
    api_prefix = "/"
    send_path = "/email"

    def __init__(self, state_path: str, **kwargs: Any) -> None:
        super().__init__(state_path, **kwargs)
        self.webhook_username, self.webhook_password = webhooks.credentials(self.store)

    def webhook_posts(
        self, pending: list[Pending], now: float
    ) -> Iterator[tuple[bytes, dict[str, str], PostedKeys]]:
        """One POST per record, with the Basic credentials; what Postmark never posts is marked done."""
        for body, headers, keys in webhooks.posts(pending, self.webhook_username, self.webhook_password):
            if body:
                yield body, headers, keys
            else:
                self.store.mark_posted(keys, scenarios.timeline_length)

    # Test controls

    def reactivate(self, email: str) -> bool:
        """Do what Postmark's support does when asked: take a spam complaint off the list."""
        return self.store.remove_spam_report(email.strip().lower())

    # WSGI

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        """Answer one request the way Postmark's API would."""
        return self._respond(Request(environ))(environ, start_response)

    def _respond(self, request: Request) -> Response:
        now = self.clock()
        admission = self.admit(request.path, now)
        if admission.failure_status is not None:
            return _failure_response(admission.failure_status)
        token = request.headers.get(TOKEN_HEADER, "").strip()
        if not token or token == INVALID_TOKEN:
            return _error(
                401,
                ERROR_INVALID_TOKEN,
                "The Server Token you provided in the X-Postmark-Server-Token request header was invalid. "
                "Please verify that you are using a valid token.",
            )
        if "application/json" not in request.headers.get("Accept", ""):
            return _error(415, 0, "The 'Accept' header must be 'application/json'.")
        try:
            endpoint, args = URLS.bind_to_environ(request.environ).match()
        except HTTPException as error:
            return _error(error.code or 404, 0, "not found" if error.code == 404 else "method not allowed")
        handler: Callable[..., Response] = getattr(self, f"_{endpoint}")
        return handler(request, now, **args)

    # Email API

    def _send(self, request: Request, now: float) -> Response:
        """POST /email: one message; 406 when every recipient is inactive."""
        payload = _json_body(request)
        if isinstance(payload, Response):
            return payload
        problem = validation.message_error(payload)
        if problem:
            return _error(422, *problem)
        result, lost = self._take([payload], request.path, now)
        if lost:
            return _failure_response(500)
        [answer] = result
        return _json(422 if answer["ErrorCode"] else 200, answer)

    def _send_batch(self, request: Request, now: float) -> Response:
        """POST /email/batch: up to 500 messages; 200 with one result per message, in order."""
        payload = _json_body(request)
        if isinstance(payload, Response):
            return payload
        problem = validation.batch_error(payload)
        if problem:
            return _error(422, *problem)
        answers: list[dict[str, Any] | None] = []
        valid = []
        for message in payload:
            problem = validation.message_error(message)
            answers.append({"ErrorCode": problem[0], "Message": problem[1]} if problem else None)
            if not problem:
                valid.append(message)
        taken, lost = self._take(valid, request.path, now)
        results = iter(taken)
        answers = [answer if answer is not None else next(results) for answer in answers]
        if lost:
            return _failure_response(500)
        return _json(200, answers)

    def _take(
        self, messages: list[dict[str, Any]], path: str, now: float
    ) -> tuple[list[dict[str, Any]], bool]:
        """Refuse messages whose every recipient is inactive, accept the others; their answers in order."""
        answers: list[dict[str, Any]] = []
        accepted: list[SimMessage] = []
        with self.store.transaction() as db:
            for message in messages:
                to = validation.recipients(message["To"]) or []
                active = [email for email in to if not _inactive(db, email, now)]
                if not active:
                    answers.append(
                        {
                            "ErrorCode": ERROR_INACTIVE_RECIPIENT,
                            "Message": INACTIVE_TEXT.format(addresses=", ".join(to)),
                        }
                    )
                    continue
                request_id = str(uuid.uuid4())
                for position, email in enumerate(active):
                    accepted.append(
                        stored.sim_message(
                            message,
                            email,
                            request_id if position == 0 else str(uuid.uuid4()),
                            request_id,
                            now,
                        )
                    )
                answer: dict[str, Any] = {
                    "To": message["To"],
                    "SubmittedAt": webhooks.timestamp(now),
                    "MessageID": request_id,
                    "ErrorCode": 0,
                    "Message": "OK",
                }
                if len(active) < len(to):
                    inactive = ", ".join(email for email in to if email not in active)
                    answer["Message"] = (
                        f"Message OK, but will not deliver to these inactive addresses: {inactive}."
                    )
                answers.append(answer)
        if not accepted:
            return answers, False
        _, lost = self.accept(accepted, path)
        return answers, lost

    # Messages API

    def _search(self, request: Request, now: float) -> Response:
        """GET /messages/outbound: count and offset required; one metadata_<key> filter at most."""
        try:
            count = _int_arg(request, "count", 1, SEARCH_MAX_COUNT)
            offset = _int_arg(request, "offset", 0, SEARCH_MAX_WINDOW)
        except ValueError as error:
            return _error(422, 1400, str(error))
        if count + offset > SEARCH_MAX_WINDOW:
            return _error(422, 1400, f"count + offset must not exceed {SEARCH_MAX_WINDOW}.")
        conditions, params = ["1 = 1"], []
        if request.args.get("recipient"):
            conditions.append("to_email = ?")
            params.append(request.args["recipient"].strip().lower())
        metadata = [
            (key[len("metadata_") :], value)
            for key, value in request.args.items()
            if key.startswith("metadata_")
        ]
        if len(metadata) > 1:
            return _error(422, 1400, "Only one metadata filter may be given.")
        found = []
        for message in self.store.messages_where(" AND ".join(conditions), params):
            if metadata and str(message.custom_args.get(metadata[0][0])) != metadata[0][1]:
                continue
            if request.args.get("tag") and request.args["tag"] not in message.categories:
                continue
            found.append(message)
        page = found[offset : offset + count]
        return _json(
            200,
            {"TotalCount": len(found), "Messages": [records.summary(m, self.visible(m, now)) for m in page]},
        )

    def _details(self, request: Request, now: float, msg_id: str) -> Response:
        """GET /messages/outbound/{id}/details: the message with its MessageEvents."""
        message = self.store.message(msg_id)
        if message is None:
            return _error(422, ERROR_MESSAGE_NOT_FOUND, "This message was not found.")
        events = self.visible(message, now)
        return _json(
            200,
            {
                **records.summary(message, events),
                "TextBody": message.text,
                "HtmlBody": message.html,
                "Body": "",
                "MessageEvents": [
                    records.message_event(message, event)
                    for event in events
                    if event.step.event in records.MESSAGE_EVENT_TYPES
                ],
            },
        )

    def _bounce(self, request: Request, now: float, bounce_id: int) -> Response:
        """GET /bounces/{id}: one bounce record (what the adapter reads a bounce's Type from)."""
        for message in self.store.messages_where("1 = 1", []):
            for event in self.visible(message, now):
                if (
                    event.step.event in webhooks.BOUNCE_TYPES
                    and webhooks.bounce_id(message.msg_id, event.index) == bounce_id
                ):
                    return _json(200, webhooks.bounce_record(message, event, webhooks.API_TYPE_CODES))
        return _error(422, ERROR_BOUNCE_NOT_FOUND, "This bounce was not found.")

    # Suppressions

    def _suppressions(self, request: Request, now: float, stream: str) -> Response:
        """GET /message-streams/{stream}/suppressions/dump: spam complaints and hard bounces so far."""
        reason = request.args.get("SuppressionReason")
        address = (request.args.get("EmailAddress") or "").strip().lower()
        entries = []
        if reason in (None, "", "SpamComplaint"):
            entries += [
                (row, "SpamComplaint") for row in self.store.spam_reports(address, end=int(now), limit=10**6)
            ]
        if reason in (None, "", "HardBounce"):
            entries += [(row, "HardBounce") for row in self.store.bounces(address, end=int(now), limit=10**6)]
        listed = [
            {
                "EmailAddress": row["email"],
                "SuppressionReason": why,
                "Origin": "Recipient",
                "CreatedAt": webhooks.timestamp(row["created"]),
            }
            for row, why in entries
            if not address or row["email"] == address
        ]
        return _json(200, {"Suppressions": listed})

    def _unsuppress(self, request: Request, now: float, stream: str) -> Response:
        """POST /message-streams/{stream}/suppressions/delete: a spam complaint is refused, per address."""
        payload = _json_body(request)
        if isinstance(payload, Response):
            return payload
        changes = payload.get("Suppressions") if isinstance(payload, dict) else None
        if not isinstance(changes, list) or not all(isinstance(c, dict) for c in changes):
            return _error(422, 1409, "A proper request body must be provided.")
        if len(changes) > MAX_SUPPRESSION_CHANGES:
            return _error(
                422, 1410, "You cannot provide more than the maximum number of suppressions for this request."
            )
        results = []
        for change in changes:
            raw = change.get("EmailAddress")
            email = validation.address_of(raw) if isinstance(raw, str) else None
            if email is None:
                results.append(
                    {
                        "EmailAddress": raw,
                        "Status": "Failed",
                        "Message": "An invalid email address was provided.",
                    }
                )
                continue
            with self.store.transaction() as db:
                complained = Store.on_spam_list(db, email, now)
                if not complained:
                    db.execute("DELETE FROM bounces WHERE email = ?", (email,))
            if complained:
                results.append({"EmailAddress": raw, "Status": "Failed", "Message": CANNOT_CHANGE})
            else:
                results.append({"EmailAddress": raw, "Status": "Deleted", "Message": None})
        return _json(200, {"Suppressions": results})


def _inactive(db: sqlite3.Connection, email: str, now: float) -> bool:
    """Whether Postmark holds the address inactive now: a spam complaint or a hard bounce."""
    if scenarios.suppressed(db, email, now):  # also lists the `dropped` address, on its first send
        return True
    row = db.execute("SELECT 1 FROM bounces WHERE email = ? AND created <= ?", (email, int(now))).fetchone()
    return row is not None


def _int_arg(request: Request, name: str, low: int, high: int) -> int:
    value = request.args.get(name)
    if value is None:
        raise ValueError(f"Parameter '{name}' is required but was left out.")
    if not value.isdigit() or not low <= int(value) <= high:
        raise ValueError(f"Parameter '{name}' should be an integer within the allowed range.")
    return int(value)


def _json_body(request: Request) -> Any:
    """The JSON body, or the answer Postmark gives for a missing Content-Type or bad JSON."""
    if "application/json" not in request.headers.get("Content-Type", ""):
        return _error(415, 0, "The 'Content-Type' header must be 'application/json'.")
    if (request.content_length or 0) > MAX_BODY_BYTES:
        return _error(413, 0, "Request entity too large.")
    data = request.get_data()
    if len(data) > MAX_BODY_BYTES:
        return _error(413, 0, "Request entity too large.")
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        return _error(422, validation.ERROR_INVALID_JSON, "The request body is not valid JSON.")


def _json(status: int, body: Any) -> Response:
    return Response(json.dumps(body), status=status, mimetype="application/json")


def _error(status: int, code: int, message: str) -> Response:
    """Postmark's error shape: {ErrorCode, Message}."""
    return _json(status, {"ErrorCode": code, "Message": message})


def _failure_response(status: int) -> Response:
    """An injected failure, in Postmark's words (no Retry-After: Postmark documents none)."""
    if status == 429:
        return _error(
            429, 429, "Rate Limit Exceeded: you have sent too many requests, please reduce the rate."
        )
    if status == 401:
        return _error(401, ERROR_INVALID_TOKEN, "The Server Token you provided was invalid.")
    if status >= 500:
        return _error(status, 0, "Internal server error.")
    return _error(status, 0, "error")
