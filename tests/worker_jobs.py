"""Jobs the worker tests enqueue: each says where it ran and what RQ recorded, through Redis (the
one place a forked child, the worker and the test all see)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from rq import get_current_job
from rq.registry import StartedJobRegistry

# Waits are bounded: a job of a failed test must not hold the worker for ever.
WAIT_SECONDS = 30.0


def report(key: str) -> None:
    """Record the pid running this job, and how long RQ counts it as running without a heartbeat."""
    job = get_current_job()
    registry = StartedJobRegistry(job.origin, connection=job.connection)
    # Each execution's score is when RQ takes it for dead unless a heartbeat moves it on.
    expires = [score for _, score in job.connection.zscan_iter(registry.key, match=f"{job.id}:*")]
    job.connection.rpush(key, f"{os.getpid()} {max(expires) - time.time():.0f}")


def report_in_child(key: str) -> None:
    """The same as report, under a name no worker runs in its own process."""
    report(key)


def wait_for_key(key: str) -> None:
    """Wait until the test sets a Redis key."""
    job = get_current_job()
    deadline = time.monotonic() + WAIT_SECONDS
    while not job.connection.exists(key) and time.monotonic() < deadline:
        time.sleep(0.05)


def wait_for_file(path: str) -> None:
    """Wait until the test makes a file (Redis may be gone meanwhile)."""
    deadline = time.monotonic() + WAIT_SECONDS
    while not Path(path).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
