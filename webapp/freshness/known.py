"""What one web process knows of the logs' change counters and of live sessions, so that an
unchanged log poll needs no Redis round trip while the process's change feed is listening.

Every change to a log bumps its counter and then announces it on the log's channel; every ended
session loses its live mark and then is announced on the sessions' channel (both in that order,
on one Redis connection). The process's change feed (webapp/freshness/stream.py) hears each
announcement and forgets what it knew of that log (of every session, for an ended one) before
it rings any stream; a commit in this process forgets at once. A value read from Redis is kept
only if nothing about it was heard while it was being read, so an announcement that overtook
the read is never undone by it. What is kept is trusted only while Redis has answered the feed's
last ping within KNOWN_LAG_SECONDS: everything announced before that ping was heard, so a kept
value is never more than that far behind Redis (in practice a few milliseconds), and a change
shows at the latest at the next poll after. The feed pings only while polls ask for what it
knows: after a spell with no poll the first one reads Redis, and what is kept is trusted again once
a ping sent after that came back (the feed listened meanwhile, so what it kept was forgotten on
every announcement as ever). When the feed loses Redis, everything kept is forgotten. A fetch that
the log's stream asked for (it rang) reads Redis itself, and does not ask the feed.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

# Logs and sessions kept per process (a few hundred bytes each); past it, the oldest goes.
MAX_KEPT = 50_000


class Known:
    """Log counters and live session marks as last read from Redis, kept current by the feed."""

    def __init__(self, size: int = MAX_KEPT) -> None:
        # Ordered: dropping the oldest is O(1) (a plain dict scans the slots its deletions left).
        self._counters: OrderedDict[str, bytes] = OrderedDict()
        self._live: OrderedDict[str, None] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()
        # Moves on every forgetting; a read is kept only if what it read was not forgotten since
        # it began: each log's last forgetting (the oldest dropped past `size`, counted as if
        # forgotten at the newest generation dropped), and the sessions' last.
        self.generation = 0
        self._logs_forgotten: OrderedDict[str, int] = OrderedDict()
        self._dropped_forgotten = 0
        self._sessions_forgotten = 0

    def answer(self, channel: str, live_key: str) -> bytes | None:
        """Return the log's counter if it and the session's live mark are both kept, else None."""
        value = self._counters.get(channel)
        if value is None or live_key not in self._live:
            return None
        return value

    def counter(self, channel: str) -> bytes | None:
        """Return the log's counter if kept."""
        return self._counters.get(channel)

    def is_live(self, live_key: str) -> bool:
        """Return whether the session's live mark is kept."""
        return live_key in self._live

    def keep(self, generation: int, channel: str, value: bytes | None, live_key: str, live: bool) -> None:
        """Keep what a Redis read begun at `generation` found, unless it was forgotten since."""
        with self._lock:
            forgotten = self._logs_forgotten.get(channel, self._dropped_forgotten)
            if value is not None and forgotten <= generation:
                _put(self._counters, channel, value, self._size)
            if live and self._sessions_forgotten <= generation:
                _put(self._live, live_key, None, self._size)

    def forget_log(self, channel: str) -> None:
        """The log announced on `channel` changed."""
        with self._lock:
            self.generation += 1
            self._counters.pop(channel, None)
            self._logs_forgotten[channel] = self.generation
            self._logs_forgotten.move_to_end(channel)
            if len(self._logs_forgotten) > self._size:
                _, dropped = self._logs_forgotten.popitem(last=False)
                self._dropped_forgotten = max(self._dropped_forgotten, dropped)

    def forget_sessions(self) -> None:
        """Some session ended (rare: sign-outs, deactivations): no session is known to be live."""
        with self._lock:
            self.generation += 1
            self._live.clear()
            self._sessions_forgotten = self.generation

    def forget_all(self) -> None:
        """The feed lost Redis (or stops): what it missed meanwhile is unknown."""
        with self._lock:
            self.generation += 1
            self._counters.clear()
            self._live.clear()
            self._logs_forgotten.clear()
            self._dropped_forgotten = self._sessions_forgotten = self.generation

    def __len__(self) -> int:
        return len(self._counters) + len(self._live)


def _put(kept: OrderedDict, key: str, value: object, size: int) -> None:
    if key not in kept and len(kept) >= size:
        kept.popitem(last=False)
    kept[key] = value
