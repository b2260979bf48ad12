"""Text from outside, made safe to store: JSON read as leniently as its meaning allows, and every
character a database refuses replaced by U+FFFD.

A provider passes on what others wrote: a receiving mail server's answer may hold a NUL, and a
JSON body may escape half of a surrogate pair ("\\ud800"). PostgreSQL's text and jsonb refuse the
first, and no UTF-8 encoder takes the second, so either would stop a whole batch of events from
being stored. The stored webhook body keeps the exact bytes; the events read from it carry
U+FFFD in their place.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

REPLACEMENT = "\ufffd"
# NUL, and any surrogate code point (a str holds one only when a pair was not completed).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable(text: str) -> str:
    """Return text with NUL and lone surrogates replaced by U+FFFD (the same str when it has none)."""
    return _UNSTORABLE.sub(REPLACEMENT, text)


def storable_json(value: Any) -> Any:
    """Return a JSON value with every string (object keys too) made storable."""
    if isinstance(value, str):
        return storable(value)
    if isinstance(value, dict):
        return {storable_json(key): storable_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [storable_json(item) for item in value]
    return value


def loads(body: bytes | str) -> Any:
    """Parse JSON from outside into storable values; ValueError when it is not JSON.

    orjson reads a clean body (the usual case, and the fast one). What it refuses although it is
    JSON, or nearly — an escaped lone surrogate, bytes that are not UTF-8, a raw control character
    in a string, an integer past 64 bits — is read by the standard module instead, with invalid
    bytes replaced, and cleaned. NaN and Infinity are not JSON and stay refused.
    """
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return storable_json(_lenient(body))
    # orjson refuses lone surrogates and raw control characters: only an escaped NUL can be left.
    escaped_nul = "\\u0000" if isinstance(body, str) else b"\\u0000"
    return storable_json(value) if escaped_nul in body else value


def _lenient(body: bytes | str) -> Any:
    text = body.decode("utf-8", "replace") if isinstance(body, bytes | bytearray) else body
    try:
        return json.loads(text, parse_constant=_refuse_constant, strict=False)
    except RecursionError:
        raise ValueError("the JSON nests too deeply") from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
