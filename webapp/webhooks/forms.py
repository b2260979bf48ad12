"""Read a multipart/form-data body as bytes: a raw mail must reach DKIM exactly as it was sent."""

from __future__ import annotations

from flask import Request
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.http import parse_options_header
from werkzeug.sansio.multipart import Data, Epilogue, Field, File, MultipartDecoder, NeedData

MAX_PARTS = 50
CHUNK = 64 * 1024


def multipart_fields(request: Request, max_bytes: int) -> dict[str, bytes]:
    """Return each form field's bytes, undecoded (the first of a repeated name wins).

    Raises ValueError for a body that is not multipart/form-data, and RequestEntityTooLarge (413)
    past `max_bytes`. Werkzeug's own form parsing would decode every field as UTF-8, replacing
    what is not: an 8-bit iso-8859-1 mail would then fail its own signature.
    """
    mimetype, options = parse_options_header(request.headers.get("Content-Type", ""))
    boundary = options.get("boundary", "")
    if mimetype != "multipart/form-data" or not boundary:
        raise ValueError("the body is not multipart/form-data")
    request.max_content_length = max_bytes  # this route's own limit, above the app's default
    if request.content_length is not None and request.content_length > max_bytes:
        raise RequestEntityTooLarge()
    decoder = MultipartDecoder(
        boundary.encode("latin-1"), max_form_memory_size=max_bytes, max_parts=MAX_PARTS
    )
    stream = request.stream
    fields: dict[str, bytes] = {}
    parts: list[bytes] = []
    name: str | None = None
    total = 0
    while True:
        chunk = stream.read(CHUNK)
        total += len(chunk)
        if total > max_bytes:
            raise RequestEntityTooLarge()
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
            return fields
