"""Growing delays after failed sign-ins, per account and client address, kept in Redis.

A lockout per account lets anyone keep its owner out; a delay per (account, address) slows a
guesser down without touching the owner's own attempts from elsewhere. The address's total of
failures, across accounts, has its own limit (Flask-Limiter, in the login view).
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from redis import Redis
from redis.exceptions import RedisError

from webapp.redis_keys import redis_key

log = logging.getLogger(__name__)

# After the last failure, how long a pair's count is kept: a quiet quarter of an hour forgives.
FORGET_AFTER_SECONDS = 15 * 60


@dataclass
class LoginThrottle:
    """Failed sign-ins of one account from one address, and how long that pair must wait."""

    redis: Redis
    free_failures: int = 3  # failures before the first delay (typos happen)
    max_delay_seconds: int = 15 * 60
    enabled: bool = True
    clock: Callable[[], float] = time.time

    def wait_seconds(self, account: str, address: str) -> int:
        """Return how many seconds this pair must still wait before its next attempt (0: none)."""
        if not self.enabled:
            return 0
        try:
            not_before = self.redis.hget(self._key(account, address), "not_before")
        except RedisError as error:
            # Sign-in keeps working while Redis is away; the delays resume with it.
            log.warning("login delays unavailable: %s", error)
            return 0
        if not_before is None:
            return 0
        return max(0, math.ceil(float(not_before) - self.clock()))

    def record_failure(self, account: str, address: str) -> int:
        """Count a failed attempt; return the delay in seconds it imposes on the pair's next one."""
        if not self.enabled:
            return 0
        key = self._key(account, address)
        try:
            failures = self.redis.hincrby(key, "failures", 1)
            delay = self.delay_after(failures)
            with self.redis.pipeline() as pipe:
                pipe.hset(key, "not_before", repr(self.clock() + delay))
                pipe.expire(key, delay + FORGET_AFTER_SECONDS)
                pipe.execute()
        except RedisError as error:
            log.warning("login delays unavailable: %s", error)
            return 0
        return delay

    def record_success(self, account: str, address: str) -> None:
        """Forget the pair's failures: the person at that address knows the password."""
        if not self.enabled:
            return
        try:
            self.redis.delete(self._key(account, address))
        except RedisError as error:
            log.warning("login delays unavailable: %s", error)

    def delay_after(self, failures: int) -> int:
        """Return the wait after this many failures: none at first, then 1, 2, 4 … seconds, capped."""
        beyond = failures - self.free_failures
        if beyond <= 0:
            return 0
        return min(2 ** min(beyond - 1, 30), self.max_delay_seconds)

    @staticmethod
    def _key(account: str, address: str) -> str:
        # Hashed: Redis need not hold the addresses people type.
        digest = hashlib.sha256(account.strip().lower().encode()).hexdigest()[:32]
        return redis_key("login-delay", digest, address)
