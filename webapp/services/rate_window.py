"""A request budget over a true sliding window, shared by every process through Redis.

Each request taken is a member of a sorted set, scored with the time it was taken; those older
than the window drop out. So no window of that length, wherever it starts, holds more than the
limit (a budget per calendar minute let twice the limit through around a minute's turn).
Taking and giving back are each one atomic script.
"""

from __future__ import annotations

import uuid

from redis import Redis

# KEYS[1] the set; ARGV: now, window seconds, limit, wanted, a prefix unique to this call.
_TAKE = """
local now, window = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now - window))
local granted = math.min(tonumber(ARGV[4]), tonumber(ARGV[3]) - redis.call('ZCARD', KEYS[1]))
for i = 1, granted do
    redis.call('ZADD', KEYS[1], now, ARGV[5] .. i)
end
redis.call('PEXPIRE', KEYS[1], math.ceil(window * 1000) + 1000)
return math.max(granted, 0)
"""
# KEYS[1] the set; ARGV: now, window seconds, how many to give back. The oldest in the window go:
# what stays is never older than what was really used, so no window counts fewer than were made.
_GIVE_BACK = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. (tonumber(ARGV[1]) - tonumber(ARGV[2])))
redis.call('ZPOPMIN', KEYS[1], tonumber(ARGV[3]))
return redis.call('ZCARD', KEYS[1])
"""


def take(redis: Redis, key: str, wanted: int, limit: int, now: float, window: float = 60.0) -> int:
    """Take up to `wanted` requests from the budget of `limit` per `window` seconds; return how many."""
    if wanted <= 0:
        return 0
    script = redis.register_script(_TAKE)
    return int(script(keys=[key], args=[repr(now), repr(window), limit, wanted, f"{uuid.uuid4().hex}:"]))


def give_back(redis: Redis, key: str, unused: int, now: float, window: float = 60.0) -> None:
    """Return requests taken but not made."""
    if unused > 0:
        redis.register_script(_GIVE_BACK)(keys=[key], args=[repr(now), repr(window), unused])


def used(redis: Redis, key: str, now: float, window: float = 60.0) -> int:
    """Return how many requests the last `window` seconds hold."""
    return int(redis.zcount(key, now - window, "+inf"))
