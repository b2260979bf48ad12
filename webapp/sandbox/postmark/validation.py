"""What Postmark's Email API refuses, and how it says so ({ErrorCode, Message}, HTTP 422).

Covers what our adapter can get wrong: a missing or malformed address, no body, Metadata that is
not flat text or whose keys are too long or repeat, a field of the wrong type, and batch limits.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

MAX_RECIPIENTS = 50
MAX_BATCH = 500
MAX_METADATA_KEY = 20
TRACK_LINKS = ("None", "HtmlAndText", "HtmlOnly", "TextOnly")

ERROR_INVALID_JSON = 402
ERROR_INVALID_FIELD = 403
ERROR_INVALID_REQUEST = 300
ERROR_TOO_MANY_BATCH_MESSAGES = 410
ERROR_FORBIDDEN_ATTACHMENT = 411
# Attachment types Postmark refuses (a part of its documented list: executables and scripts).
FORBIDDEN_EXTENSIONS = (".exe", ".bat", ".cmd", ".com", ".js", ".vbs", ".scr", ".msi", ".jar")

_ADDRESS = re.compile(r"[^@\s<>()\",;:]+@[^@\s<>()\",;:]+\.[^@\s<>()\",;:]+")
_NAMED = re.compile(r'^\s*(?:"(?:[^"\\]|\\.)*"|[^<>"]*)\s*<([^<>]+)>\s*$')


def address_of(value: str) -> str | None:
    """Return the address of `addr` or `Name <addr>` / `"Name" <addr>`, or None when malformed."""
    value = value.strip()
    named = _NAMED.match(value)
    address = named.group(1).strip() if named else value
    return address.lower() if _ADDRESS.fullmatch(address) else None


def recipients(value: Any) -> list[str] | None:
    """Split a comma-separated To/Cc/Bcc string into addresses; None when one is malformed."""
    if not isinstance(value, str) or not value.strip():
        return None
    found = []
    # Commas inside a quoted display name do not separate recipients.
    for part in re.findall(r'(?:"(?:[^"\\]|\\.)*"|[^,])+', value):
        address = address_of(part)
        if address is None:
            return None
        found.append(address)
    return found


def message_error(message: Any) -> tuple[int, str] | None:
    """Return (ErrorCode, Message) for a message Postmark would refuse, else None."""
    if not isinstance(message, dict):
        return ERROR_INVALID_JSON, "The request body is not a valid message object."
    for field in (
        "From",
        "To",
        "Cc",
        "Bcc",
        "Subject",
        "TextBody",
        "HtmlBody",
        "ReplyTo",
        "Tag",
        "MessageStream",
    ):
        if field in message and message[field] is not None and not isinstance(message[field], str):
            return ERROR_INVALID_FIELD, f"Invalid request field(s) - {field}"
    for field in ("TrackOpens",):
        if field in message and not isinstance(message[field], bool):
            return ERROR_INVALID_FIELD, f"Invalid request field(s) - {field}"
    if not message.get("From") or address_of(message["From"]) is None:
        return (
            ERROR_INVALID_REQUEST,
            f"Error parsing 'From': Illegal email address '{message.get('From') or ''}'.",
        )
    to = recipients(message.get("To"))
    if to is None:
        return (
            ERROR_INVALID_REQUEST,
            f"Error parsing 'To': Illegal email address '{message.get('To') or ''}'.",
        )
    extra = [recipients(message[field]) for field in ("Cc", "Bcc") if message.get(field)]
    if any(found is None for found in extra):
        return ERROR_INVALID_REQUEST, "Error parsing 'Cc' or 'Bcc': Illegal email address."
    if len(to) + sum(len(found or []) for found in extra) > MAX_RECIPIENTS:
        return ERROR_INVALID_REQUEST, f"Maximum of {MAX_RECIPIENTS} recipients allowed across To, Cc and Bcc."
    if not message.get("TextBody") and not message.get("HtmlBody"):
        return ERROR_INVALID_REQUEST, "Provide either email TextBody or HtmlBody or both."
    if message.get("TrackLinks") is not None and message.get("TrackLinks") not in TRACK_LINKS:
        return ERROR_INVALID_FIELD, "Invalid request field(s) - TrackLinks"
    if message.get("ReplyTo") and recipients(message["ReplyTo"]) is None:
        return ERROR_INVALID_REQUEST, f"Error parsing 'ReplyTo': Illegal email address '{message['ReplyTo']}'"
    return attachments_error(message.get("Attachments")) or metadata_error(message.get("Metadata"))


def attachments_error(attachments: Any) -> tuple[int, str] | None:
    """Attachments: [{Name, Content (base64), ContentType, ContentID?}], of an allowed type."""
    if attachments is None:
        return None
    if not isinstance(attachments, list):
        return ERROR_INVALID_FIELD, "Invalid request field(s) - Attachments"
    for attachment in attachments:
        fields = ("Name", "Content", "ContentType")
        if not isinstance(attachment, dict) or not all(
            isinstance(attachment.get(key), str) and attachment[key] for key in fields
        ):
            return ERROR_INVALID_FIELD, "Invalid request field(s) - Attachments"
        try:
            base64.b64decode(attachment["Content"], validate=True)
        except (binascii.Error, ValueError):
            return ERROR_INVALID_FIELD, "Invalid request field(s) - Attachments"
        if attachment["Name"].lower().endswith(FORBIDDEN_EXTENSIONS):
            return ERROR_FORBIDDEN_ATTACHMENT, f"Forbidden attachment type: {attachment['Name']}"
    return None


def metadata_error(metadata: Any) -> tuple[int, str] | None:
    """Metadata is a flat object of text; keys of at most 20 characters, unique ignoring case."""
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        return ERROR_INVALID_FIELD, "Invalid request field(s) - Metadata"
    seen: set[str] = set()
    for key, value in metadata.items():
        if len(key) > MAX_METADATA_KEY:
            return (
                ERROR_INVALID_REQUEST,
                f"Invalid metadata content. Field names are limited to {MAX_METADATA_KEY} characters.",
            )
        if key.lower() in seen:
            return ERROR_INVALID_REQUEST, "Invalid metadata content. Field names must be unique."
        seen.add(key.lower())
        if isinstance(value, dict | list):
            return ERROR_INVALID_REQUEST, "Invalid metadata content. Values must be text."
    return None


def batch_error(messages: Any) -> tuple[int, str] | None:
    """What refuses a whole batch: not an array, or more than 500 messages."""
    if not isinstance(messages, list):
        return ERROR_INVALID_JSON, "The request body must be a JSON array of messages."
    if len(messages) > MAX_BATCH:
        return (
            ERROR_TOO_MANY_BATCH_MESSAGES,
            f"Too many batch messages ({len(messages)}), maximum is {MAX_BATCH}.",
        )
    return None
