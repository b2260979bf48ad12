"""Postmark's inbound webhook: a mail to the support address, posted as one JSON object.

With the inbound server's "Include raw email content in JSON payload" on, `RawEmail` holds the raw
message (with LF line ends: SMTP carried it, and DKIM signed it, with CRLF, so they are restored);
without it, only Postmark's own parse (From, To, Subject, TextBody, Headers) arrives, which proves
nothing. Postmark gives no DKIM verdict of its own: its SpamAssassin run's DKIM tests
(X-Spam-Tests) and its Received-SPF header are kept for support to read.
"""

from __future__ import annotations

import json
import re
from typing import Any

from webapp.providers.base import InboundMail

MAX_FIELD_CHARS = 200_000
MAX_HEADERS = 500
RAW_HINT = (
    "In Postmark's settings of the inbound stream that receives the support address, turn on "
    "“Include raw email content in JSON payload”."
)
_LINE_END = re.compile(rb"\r?\n")


def read_inbound(content_type: str, body: bytes) -> InboundMail:
    """Read one inbound webhook post; ValueError when it is not a JSON object holding a mail.

    The content type is not relied on: the credentials, checked first, say who posted it.
    """
    try:
        item = json.loads(body)
    except RecursionError:
        raise ValueError("the body nests too deeply") from None
    except ValueError as error:
        raise ValueError(f"the body is not JSON: {error}") from None
    if not isinstance(item, dict):
        raise ValueError("the body is not a JSON object")
    record_type = item.get("RecordType", "Inbound")
    if record_type != "Inbound":
        # An event webhook (Bounce, Delivery, ...) set to this URL by mistake.
        raise ValueError(f"a {str(record_type)[:40]!r} record was posted to the inbound webhook")
    headers = _headers(item.get("Headers"))
    hints = {
        "receiver": "Postmark",
        "receiver_dkim": _spam_dkim_tests(headers),
        "spf": next((value for name, value in headers if name.lower() == "received-spf"), "")[:500],
    }
    raw = item.get("RawEmail")
    if raw is not None and not isinstance(raw, str):
        raise ValueError("RawEmail is not a string")
    if raw and raw.strip():
        return InboundMail(raw=_line_ends_restored(raw), **hints)
    parsed = {
        "from": _sender(item),
        "to": _string(item, "To"),
        "subject": _string(item, "Subject"),
        "text": _string(item, "TextBody"),
        "headers": "\n".join(f"{name}: {value}" for name, value in headers)[:MAX_FIELD_CHARS],
    }
    if not (parsed["from"] or parsed["text"] or parsed["headers"]):
        raise ValueError("the post holds no mail")
    return InboundMail(raw=None, parsed=parsed, raw_hint=RAW_HINT, **hints)


def _line_ends_restored(raw: str) -> bytes:
    """Return the message as bytes with CRLF line ends (a lone CR is left for the check to refuse)."""
    try:  # 8-bit bytes that are not UTF-8 come back from JSON as lone surrogates, if at all
        data = raw.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        data = raw.encode("utf-8", "replace")
    return _LINE_END.sub(b"\r\n", data)


def _headers(value: Any) -> list[tuple[str, str]]:
    """Return the Headers array's (Name, Value) pairs that are strings, bounded in number."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError("Headers is not an array")
    pairs = [entry for entry in value[:MAX_HEADERS] if isinstance(entry, dict)]
    return [
        (entry["Name"][:200], entry["Value"][:MAX_FIELD_CHARS])
        for entry in pairs
        if isinstance(entry.get("Name"), str) and isinstance(entry.get("Value"), str)
    ]


def _spam_dkim_tests(headers: list[tuple[str, str]]) -> str:
    """Return the DKIM tests of Postmark's SpamAssassin run ("" when it reported none)."""
    tests = next((value for name, value in headers if name.lower() == "x-spam-tests"), "")
    found = [word for word in re.split(r"[\s,]+", tests[:2000]) if word.upper().startswith("DKIM_")]
    return ("SpamAssassin " + ", ".join(found[:10])) if found else ""


def _sender(item: dict[str, Any]) -> str:
    """Return the sender as Postmark parsed it: "Name <address>", or the address alone."""
    full = item.get("FromFull")
    if isinstance(full, dict) and isinstance(full.get("Email"), str):
        name = full.get("Name") if isinstance(full.get("Name"), str) else ""
        # Not formataddr: it would encode the name, and fail on what JSON may hold (lone surrogates).
        return f"{name[:300]} <{full['Email'][:320]}>" if name else full["Email"][:320]
    return _string(item, "From")


def _string(item: dict[str, Any], key: str) -> str:
    value = item.get(key)
    return value[:MAX_FIELD_CHARS] if isinstance(value, str) else ""
