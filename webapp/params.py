"""Reading numbers from URLs: whatever a client sends, a bad number is a default or a 404, never a 500."""

from __future__ import annotations

from flask import request
from werkzeug.routing import IntegerConverter, Map

# Page numbers beyond this are clamped: no query ever gets an offset that overflows.
MAX_PAGE = 100_000
# Our ids are 32-bit integer columns; a larger id in a path cannot name a row.
MAX_ID = 2**31 - 1


def page_number(name: str = "page") -> int:
    """Return the page asked for in the query string: 1 when missing or not a number, at most MAX_PAGE."""
    raw = request.args.get(name, "")
    # isdigit() alone accepts "²" and other digits int() refuses; long strings are clamped unread.
    if not (raw.isascii() and raw.isdigit()):
        return 1
    return MAX_PAGE if len(raw) > len(str(MAX_PAGE)) else max(1, min(int(raw), MAX_PAGE))


def whole_number(text: str, max_digits: int = 12) -> int | None:
    """Return the ASCII whole number in the text, or None (also for more than max_digits digits)."""
    if text.isascii() and text.isdigit() and len(text) <= max_digits:
        return int(text)
    return None


def id_arg(name: str) -> int | None:
    """Return the id named in the query string, or None when it is missing or cannot name a row."""
    number = whole_number(request.args.get(name, ""), 10)
    return number if number is not None and 0 < number <= MAX_ID else None


def id_list(name: str, limit: int) -> set[int]:
    """Return up to `limit` ids from a comma-separated query argument, ignoring anything else."""
    # Read no further than `limit` ids could take, so a long argument costs nothing.
    parts = request.args.get(name, "")[: limit * 11].split(",")[:limit]
    numbers = {whole_number(part, 10) for part in parts}
    return {number for number in numbers if number is not None and 0 < number <= MAX_ID}


class IdConverter(IntegerConverter):
    """The `int` of our URLs: an id beyond the id columns' range is a 404, not a database error."""

    def __init__(self, map: Map, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("max", MAX_ID)
        super().__init__(map, *args, **kwargs)  # type: ignore[arg-type]
