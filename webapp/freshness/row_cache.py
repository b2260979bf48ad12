"""Rendered email log rows kept in each web process, so a full log renders only the rows that changed.

A row is kept under everything its HTML was rendered from: the email's columns and its sender's
name as read (its `version` among them, bumped whenever anything shown about it changes), how
long ago its status changed as shown, the viewer's time zone and the app's URLs. A changed email,
a time zone or a "5 min ago" that moved on is a new key, so a stale row is never served; old keys
simply age out.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable

from flask import Flask
from markupsafe import Markup

# A kept row takes about 4 KB (1,450 characters of HTML, stored two bytes a character for its
# curly quotes, and its key): some 20 MB a process for the rows of 25 logs of 200 emails.
MAX_ROWS = 5_000


class RowCache:
    """A bounded map of rendered rows by what they were rendered from, shared by a process's threads."""

    def __init__(self, size: int = MAX_ROWS) -> None:
        # Ordered: dropping the oldest is O(1) (a plain dict scans the slots its deletions left).
        self._rows: OrderedDict[Hashable, Markup] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def for_request(self, context: Hashable) -> RequestRows:
        """Return this cache seen from one request, whose rows also depend on `context`."""
        return RequestRows(self, context)

    def get(self, key: Hashable) -> Markup | None:
        """Return the row rendered from `key`, if kept."""
        return self._rows.get(key)

    def keep(self, key: Hashable, html: Markup) -> None:
        """Keep a rendered row, dropping the oldest kept one when full."""
        with self._lock:
            if key not in self._rows and len(self._rows) >= self._size:
                # The oldest first: a row dropped while still shown is rendered once more.
                self._rows.popitem(last=False)
            self._rows[key] = html

    def __len__(self) -> int:
        return len(self._rows)


def rows(app: Flask) -> RowCache:
    """Return the app's row cache (one per process), made on first use."""
    cache = app.extensions.get("log_rows")
    if cache is None:
        cache = app.extensions.setdefault("log_rows", RowCache())
    return cache


class RequestRows:
    """The row cache as one request's template uses it: rows without a key are never kept."""

    __slots__ = ("_cache", "_context")

    def __init__(self, cache: RowCache, context: Hashable) -> None:
        self._cache = cache
        self._context = context

    def get(self, key: Hashable | None) -> Markup | None:
        """Return the row kept for `key` in this request's context, if any."""
        return None if key is None else self._cache.get((key, self._context))

    def keep(self, key: Hashable | None, html: Markup) -> Markup:
        """Keep the row just rendered for `key` (unless it has none); return it."""
        if key is not None:
            self._cache.keep((key, self._context), html)
        return html
