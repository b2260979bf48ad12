"""Reading what an adapter handed its provider: one request body's message in no provider's words,
checked against the provider's documented request shape, and rebuilt as the MIME message the
provider makes of it (the contract tests of sent content share these)."""

from __future__ import annotations

import base64
import dataclasses
import email
import email.policy
import json
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from tests.contract.sendgrid_spec import assert_valid, load_spec

POSTMARK_SCHEMA = (
    Path(__file__).resolve().parents[1] / "fixtures" / "postmark" / "send_email_request.schema.json"
)


@dataclasses.dataclass
class Sent:
    """One message of a request, in no provider's words."""

    parts: list[tuple[str, str]]  # (MIME type, value), in the request's order
    attachments: list[tuple[str, str, str]]  # (filename, MIME type, base64 content)
    reply_to: str | None
    track_opens: bool
    track_links: bool
    text_links_tracked: bool


def read_sendgrid(body: dict[str, Any]) -> Sent:
    tracking = body["tracking_settings"]
    return Sent(
        parts=[(part["type"], part["value"]) for part in body["content"]],
        attachments=[(a["filename"], a["type"], a["content"]) for a in body.get("attachments", [])],
        reply_to=body.get("reply_to", {}).get("email"),
        track_opens=tracking["open_tracking"]["enable"],
        track_links=tracking["click_tracking"]["enable"],
        text_links_tracked=tracking["click_tracking"]["enable_text"],
    )


def read_postmark(body: dict[str, Any]) -> Sent:
    parts = [("text/plain", body["TextBody"])] if "TextBody" in body else []
    parts += [("text/html", body["HtmlBody"])] if "HtmlBody" in body else []
    return Sent(
        parts=parts,
        attachments=[(a["Name"], a["ContentType"], a["Content"]) for a in body.get("Attachments", [])],
        reply_to=body.get("ReplyTo"),
        track_opens=body["TrackOpens"],
        track_links=body["TrackLinks"] != "None",
        text_links_tracked=body["TrackLinks"] in ("HtmlAndText", "TextOnly"),
    )


READERS = {"sendgrid": read_sendgrid, "postmark": read_postmark}


def check_shape(wire_format: str, body: dict[str, Any]) -> None:
    """The body against the provider's documented request schema."""
    if wire_format == "sendgrid":
        assert_valid(load_spec(), "mail_send_request", body)
    else:
        schema = {k: v for k, v in json.loads(POSTMARK_SCHEMA.read_text()).items() if k != "_source"}
        errors = list(Draft202012Validator(schema).iter_errors(body))
        assert not errors, [error.message for error in errors]


def bodies(requests: list[Any]) -> list[dict[str, Any]]:
    """The message bodies of recorded send requests (a batch's one by one)."""
    found: list[dict[str, Any]] = []
    for request in requests:
        document = json.loads(request.content)
        found += document if isinstance(document, list) else [document]
    return found


def as_mime(sent: Sent, reply_to: str | None) -> EmailMessage:
    """The message the provider builds of the request: alternative parts in the request's order,
    then the attachments; written out and parsed back, as a mail client reads it."""
    built = EmailMessage()
    if reply_to:
        built["Reply-To"] = reply_to
    for mime_type, value in sent.parts:
        subtype = mime_type.split("/")[1]
        if not built.is_multipart() and built.get_content_type() == "text/plain" and not built.get_payload():
            built.set_content(value, subtype=subtype)
        else:
            built.add_alternative(value, subtype=subtype)
    for filename, mime_type, content in sent.attachments:
        # The type's parameters (charset, method) go into the part's header as the request gave them.
        header = EmailMessage()
        header["Content-Type"] = mime_type
        built.add_attachment(
            base64.b64decode(content),
            maintype=header.get_content_maintype(),
            subtype=header.get_content_subtype(),
            filename=filename,
            params=dict(header["Content-Type"].params),
        )
    parsed = email.message_from_bytes(built.as_bytes(), policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed
