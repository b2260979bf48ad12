"""SendGrid's Inbound Parse: a mail to the support address, posted as multipart/form-data.

With "POST the raw, full MIME message" on, the `email` field holds the raw message; without it,
SendGrid posts only its own parse (from, to, subject, text, headers), which proves nothing.
SendGrid's `dkim` and `SPF` fields are its own verdicts, kept for support to read.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.http import parse_options_header
from werkzeug.sansio.multipart import Data, Epilogue, Field, File, MultipartDecoder, NeedData

from webapp.providers.base import InboundMail, InboundTooLarge

MAX_PARTS = 50
CHUNK = 64 * 1024
MAX_FIELD_CHARS = 200_000
PARSED_FIELDS = ("from", "to", "subject", "text", "headers")
RAW_HINT = (
    "In SendGrid's Inbound Parse settings for the support address, turn on “POST the raw, full MIME message”."
)

# SendGrid's dkim field is not JSON: "{@example.com : pass}", several entries, or "none".
_RECEIVER_RESULT = re.compile(r"@([A-Za-z0-9_.-]{1,253})\s{0,5}:\s{0,5}([A-Za-z]{1,20})")


def read_inbound(content_type: str, body: bytes) -> InboundMail:
    """Read one Inbound Parse post; ValueError when it is not a form or holds no mail."""
    fields = multipart_fields(content_type, body)
    receiver_dkim = _field_text(fields, "dkim")
    hints = {
        "receiver": "SendGrid",
        "receiver_dkim": receiver_dkim,
        "receiver_dkim_passes": tuple(
            entry["d"] for entry in parse_receiver_dkim(receiver_dkim) if entry["result"] == "pass"
        ),
        "spf": _field_text(fields, "SPF"),
    }
    if fields.get("email", b"").strip():
        return InboundMail(raw=fields["email"], **hints)
    if fields.get("from") or fields.get("text") or fields.get("headers"):
        parsed = {name: _field_text(fields, name) for name in PARSED_FIELDS}
        return InboundMail(raw=None, parsed=parsed, raw_hint=RAW_HINT, **hints)
    raise ValueError("the post holds no mail")


def parse_receiver_dkim(value: str) -> list[dict[str, str]]:
    """Read SendGrid's dkim field ("{@example.com : pass}", maybe several) into (d, result) pairs."""
    return [
        {"d": domain.lower().rstrip("."), "result": result.lower()}
        for domain, result in _RECEIVER_RESULT.findall(value[:2000])
    ]


def multipart_fields(content_type: str, body: bytes) -> dict[str, bytes]:
    """Return each form field's bytes, undecoded (the first of a repeated name wins).

    Raises ValueError for a body that is not multipart/form-data, and InboundTooLarge past
    MAX_PARTS parts. Werkzeug's own form parsing would decode every field as UTF-8, replacing
    what is not: an 8-bit iso-8859-1 mail would then fail its own signature.
    """
    mimetype, options = parse_options_header(content_type)
    boundary = options.get("boundary", "")
    if mimetype != "multipart/form-data" or not boundary:
        raise ValueError("the body is not multipart/form-data")
    decoder = MultipartDecoder(boundary.encode("latin-1"), max_parts=MAX_PARTS)
    fields: dict[str, bytes] = {}
    parts: list[bytes] = []
    name: str | None = None
    try:
        for chunk in _chunks(body):
            decoder.receive_data(chunk or None)
            event = decoder.next_event()
            while not isinstance(event, (Epilogue, NeedData)):
                if isinstance(event, (Field, File)):
                    name, parts = event.name, []
                elif isinstance(event, Data):
                    parts.append(event.data)
                    if not event.more_data and name is not None:
                        fields.setdefault(name, b"".join(parts))
                        name, parts = None, []
                event = decoder.next_event()
            if isinstance(event, Epilogue) or not chunk:
                break
    except RequestEntityTooLarge:
        raise InboundTooLarge(f"the form has more than {MAX_PARTS} parts") from None
    return fields


def _chunks(body: bytes) -> Iterator[bytes]:
    """Yield the body in chunks, then b"" for its end (the decoder's search stays linear)."""
    for start in range(0, len(body), CHUNK):
        yield body[start : start + CHUNK]
    yield b""


def _field_text(fields: dict[str, bytes], name: str) -> str:
    return fields.get(name, b"")[:MAX_FIELD_CHARS].decode("utf-8", "replace")
