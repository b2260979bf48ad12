"""The provider's records budget: requests in the last 60 seconds, shared by every worker in Redis.

Each provider declares what its records API allows and what one lookup covers (`records_cost` in
webapp/providers/base.py); ACTIVITY_REQUESTS_PER_MINUTE, when set, overrides the limit (an
account's own plan). Two uses draw on it: settling sends in doubt and polling status. Each has a
share of the minute. While both have work neither takes the other's share, so a backlog of sends
in doubt never stops polling and a busy poller never stops sends from settling; a use that has
asked for nothing for a minute lends its share to the other. A 429 holds both back (block_polling).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from flask import current_app
from redis.exceptions import RedisError

from webapp import clock
from webapp.providers.base import EmailProvider

log = logging.getLogger(__name__)

SETTLE = "settle"  # looking up sends in doubt
POLL = "poll"  # status polling
SHARES = (SETTLE, POLL)
WINDOW_SECONDS = 60
KEY = "records-budget"
BLOCKED_KEY = "activity-blocked-until"

# Atomic, so workers taking at once never grant more than the limit. One sorted-set member per
# request granted, scored by our clock (a test's fake clock moves the window); a "busy until" mark
# says the share has work, so the other may not use what it has not spent yet.
_TAKE = """
local own, other, other_busy, own_busy = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local limit, other_share, wanted = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
redis.call('ZREMRANGEBYSCORE', own, '-inf', now - window)
redis.call('ZREMRANGEBYSCORE', other, '-inf', now - window)
local used_own, used_other = redis.call('ZCARD', own), redis.call('ZCARD', other)
local kept = 0
if tonumber(redis.call('GET', other_busy) or '0') > now then
  kept = math.max(0, other_share - used_other)
end
local granted = math.max(0, math.min(wanted, limit - used_own - used_other - kept))
for i = 1, granted do
  redis.call('ZADD', own, now, ARGV[6] .. ':' .. i)
end
redis.call('PEXPIRE', own, window * 2000)
redis.call('SET', own_busy, tostring(now + window), 'PX', window * 2000)
return granted
"""


@dataclass(frozen=True)
class Grant:
    """Requests one use may make now; give back what it did not make."""

    share: str
    requests: int
    key: str = ""
    token: str = ""


def limit(provider: EmailProvider) -> int:
    """Requests a minute the provider's records API allows us (the setting, else its own figure)."""
    override = current_app.config["ACTIVITY_REQUESTS_PER_MINUTE"]
    return int(override) if override else provider.records_cost.requests_per_minute


def shares(total: int) -> dict[str, int]:
    """Split a minute's requests between settling (the larger half) and polling."""
    settle = -(-total // 2)
    return {SETTLE: settle, POLL: total - settle}


def take(provider: EmailProvider, share: str, wanted: int) -> Grant:
    """Reserve up to `wanted` requests for one use; none while the provider holds us back."""
    if wanted <= 0:
        return Grant(share, 0)
    other = POLL if share == SETTLE else SETTLE
    total = limit(provider)
    key = _key(provider, share)
    token = uuid.uuid4().hex
    try:
        if blocked_until(BLOCKED_KEY) is not None:
            return Grant(share, 0)
        redis = current_app.extensions["redis"]
        granted = redis.register_script(_TAKE)(
            keys=[key, _key(provider, other), _key(provider, other) + ":busy", key + ":busy"],
            args=[repr(clock.timestamp()), WINDOW_SECONDS, total, shares(total)[other], wanted, token],
        )
    except RedisError as error:
        log.warning("the provider's records budget is unavailable: %s", error)
        return Grant(share, 0)
    return Grant(share, int(granted), key, token)


def give_back(grant: Grant, used: int) -> None:
    """Return the requests of a grant that were not made."""
    unused = range(max(0, used) + 1, grant.requests + 1)
    if not unused:
        return
    try:
        current_app.extensions["redis"].zrem(grant.key, *(f"{grant.token}:{n}" for n in unused))
    except RedisError as error:
        log.warning("could not give back the provider's records budget: %s", error)


def usage(provider: EmailProvider) -> dict[str, int] | None:
    """Return the requests each use made in the last minute; None without Redis."""
    since = clock.timestamp() - WINDOW_SECONDS
    try:
        redis = current_app.extensions["redis"]
        return {share: int(redis.zcount(_key(provider, share), f"({since!r}", "+inf")) for share in SHARES}
    except RedisError as error:
        log.warning("the provider's records budget is unavailable: %s", error)
        return None


def _key(provider: EmailProvider, share: str) -> str:
    return f"{KEY}:{provider.name}:{share}"


def block(key: str, seconds: float) -> None:
    """Hold every worker back from one kind of request for a while (the provider said 429)."""
    until = clock.timestamp() + seconds
    # The value says until when (so a test's clock can move past it); the expiry tidies up.
    current_app.extensions["redis"].set(key, repr(until), px=max(1, int(seconds * 1000)))


def blocked_until(key: str) -> float | None:
    """Return the unix time a block set with `block` lasts until, or None when there is none."""
    value = current_app.extensions["redis"].get(key)
    if value is None:
        return None
    try:
        until = float(value)
    except ValueError:
        return None
    return until if until > clock.timestamp() else None


def block_polling(seconds: float) -> None:
    """Stop every worker polling (and checking in-doubt sends) for a while (the provider said 429)."""
    block(BLOCKED_KEY, seconds)
