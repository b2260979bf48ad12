"""Riding out a Redis restart: the worker and the scheduler wait for Redis to answer again (with
backoff, saying so once each way, stopping when asked to) and RQ's repeated lines are quieted."""

from __future__ import annotations

import logging
import signal
import time

import click
from redis import Redis
from redis.exceptions import RedisError

# Backoff between tries while Redis does not answer.
FIRST_DELAY_SECONDS = 0.5
MAX_DELAY_SECONDS = 10.0


def wait_for_redis(redis: Redis, who: str, pause: float = 0.0) -> bool:
    """Wait, with backoff, until Redis answers (at least `pause` seconds, so a loop that keeps
    failing for another reason does not spin); say so once each way. False: asked to stop."""
    stop = {"asked": False}

    def request_stop(signum: int, _frame: object) -> None:
        stop["asked"] = True

    def sleep(seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not stop["asked"]:
            time.sleep(0.1)

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    delay = FIRST_DELAY_SECONDS
    said = False
    try:
        sleep(pause)
        while not stop["asked"]:
            try:
                redis.ping()
            except RedisError as error:
                if not said:
                    click.echo(f"{who}: Redis does not answer ({error}); retrying with backoff", err=True)
                    said = True
                sleep(delay)
                delay = min(delay * 2, MAX_DELAY_SECONDS)
            else:
                click.echo(
                    f"{who}: Redis answers again; carrying on"
                    if said
                    else f"{who}: RQ stopped its loop (see above); starting it again",
                    err=True,
                )
                return True
        return False
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class OncePerOutage(logging.Filter):
    """Let through one of RQ's "could not connect to Redis" lines per outage, not one a retry,
    and none of its tracebacks of a lost connection (the worker command says what happened)."""

    QUIET_SECONDS = 120.0

    def __init__(self) -> None:
        super().__init__()
        self._last = 0.0

    def filter(self, record: logging.LogRecord) -> bool:
        """Return whether the record is logged."""
        if record.exc_info and isinstance(record.exc_info[1], RedisError):
            return False
        if "could not connect to Redis" not in str(record.msg):
            return True
        now = time.monotonic()
        repeated = now - self._last < self.QUIET_SECONDS
        self._last = now
        return not repeated
