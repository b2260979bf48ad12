"""Open email-log streams per user, across all of the user's sessions and every web process.

Each open stream holds a connection of the web server: a user may hold LOG_STREAMS_PER_USER of
them wherever they were opened (the process's own cap is in webapp/freshness/stream.py). The
streams are counted in Redis, one sorted set per user whose members expire with their stream's
lifetime: a process killed without closing its streams leaves nothing counted for long.
"""

from __future__ import annotations

import logging

from redis import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

# A stream ends by its lifetime; this much later its entry goes even if nobody closed it.
GRACE_SECONDS = 60

# Atomic: drop expired entries, refuse at the limit, else add this stream (score: its expiry).
_CLAIM = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""


def _key(user_id: int) -> str:
    return f"log-streams:user:{user_id}"


def claim(redis: Redis, user_id: int, token: str, now: float, lifetime: float, limit: int) -> bool | None:
    """Count one more open stream for the user; False at the limit, None when Redis does not answer."""
    expires = now + lifetime + GRACE_SECONDS
    try:
        return bool(
            redis.eval(
                _CLAIM, 1, _key(user_id), repr(now), limit, repr(expires), token, int(expires - now) + 1
            )
        )
    except RedisError as error:
        log.warning("open log streams cannot be counted: %s", error)
        return None


def release(redis: Redis, user_id: int, token: str) -> None:
    """Stop counting a stream that ended."""
    try:
        redis.zrem(_key(user_id), token)
    except RedisError as error:
        # Its entry expires with the stream's lifetime.
        log.warning("an ended log stream could not be uncounted: %s", error)
