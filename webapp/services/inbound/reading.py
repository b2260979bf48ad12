"""Reading a hostile mail within bounds: its headers as DKIM split them, its plain-text body,
and text made safe to store and show.

Sizes are bounded before any parser runs, so a hostile mail cannot make reading it slow.
"""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage

EXCERPT_CHARS = 4000
# Hostile mail is bounded before anything parses it: the whole header block, and each header that
# support reads or that we parse (proof.py bounds each signature).
MAX_HEADER_BLOCK = 256 * 1024
# dkimpy's header parse and selection grow faster than linearly with these: bound them first.
MAX_HEADER_LINES = 2000
# What is read of the body to show support: its start, and a bounded number of MIME parts.
MAX_BODY_BYTES = 2 * 1024 * 1024
MAX_BODY_PARTS = 200
MAX_KEY_HEADER = 2000


class MailHeaders:
    """A mail's headers as dkimpy split them: (name, value) byte pairs in their order."""

    def __init__(self, pairs: list[list[bytes]]) -> None:
        self.pairs = pairs
        self.values: dict[str, list[str]] = {}
        for name, value in pairs:
            text = value.decode("utf-8", "surrogateescape")
            # Unfold: a line break followed by white space is part of the same header.
            self.values.setdefault(name.decode("ascii", "replace").lower(), []).append(
                " ".join(text.split("\r\n")).strip()
            )

    def all(self, name: str) -> list[str]:
        """Return every value of a header, unfolded, in order."""
        return self.values.get(name, [])

    def first(self, name: str) -> str:
        """Return the first value of a header, or ""."""
        values = self.all(name)
        return values[0] if values else ""

    def count(self, name: str) -> int:
        """Return how many times a header appears."""
        return len(self.all(name))


def body_text(headers: MailHeaders, body: bytes) -> str:
    """Return the plain-text part of the signed body (never HTML), decoded by its own charset.

    Only the body's own MIME headers are given to the parser, rebuilt from DKIM's parse, and the
    body is bounded in size and parts: a hostile mail cannot make this slow.
    """
    body = body[:MAX_BODY_BYTES]
    if body.count(b"\n--") > MAX_BODY_PARTS:
        return "(This mail has too many parts to show.)"
    content = [
        f"{label}: {headers.first(name)}\r\n".encode("utf-8", "surrogateescape")
        for name, label in (
            ("mime-version", "MIME-Version"),
            ("content-type", "Content-Type"),
            ("content-transfer-encoding", "Content-Transfer-Encoding"),
        )
        if headers.count(name)
    ]
    try:
        message = email.message_from_bytes(b"".join(content) + b"\r\n" + body, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        part = message.get_body(preferencelist=("plain",))
        text = part.get_content() if part is not None else ""
    except Exception:  # an undecodable body still files the case
        text = ""
    return clean(str(text).strip(), EXCERPT_CHARS)


def header_end(raw: bytes) -> int:
    """Return where the header block ends (-1 when there is no body separator nor any header)."""
    for separator in (b"\r\n\r\n", b"\n\n"):
        found = raw.find(separator, 0, MAX_HEADER_BLOCK + 4)
        if found >= 0:
            return found + len(separator)
    if len(raw) > MAX_HEADER_BLOCK:
        return MAX_HEADER_BLOCK + 1
    return len(raw) if raw.strip() else -1


def decoded(value: object) -> str:
    """Return a header as a person reads it (encoded words decoded), bounded."""
    text = str(value)[:MAX_KEY_HEADER]
    try:
        return str(email.policy.default.header_factory("subject", text))
    except Exception:  # undecodable: show it as written
        return text


def ascii_text(value: bytes) -> str:
    return value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)


def clean(text: str, limit: int) -> str:
    """Make attacker-supplied text storable anywhere: no NULs, no lone surrogates, bounded."""
    text = str(text)[: limit * 2]
    try:  # raw 8-bit header bytes come back from the parser as surrogate escapes
        data = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        data = text.encode("utf-8", "replace")
    return data.decode("utf-8", "replace").replace("\x00", "")[:limit]
