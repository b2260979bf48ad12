"""The current time, from one place, so a test can move it for the whole app and the sandbox."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

_source: Callable[[], float] = time.time


def timestamp() -> float:
    """Return the current unix time in seconds."""
    return _source()


def now() -> datetime:
    """Return the current time, timezone-aware, in UTC."""
    return datetime.fromtimestamp(_source(), UTC)


def use(source: Callable[[], float] | None) -> None:
    """Read the time from `source` (a fake clock in tests); None goes back to the real time."""
    global _source
    _source = source or time.time
