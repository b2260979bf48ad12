"""Enqueue background work. Redis holds queues only: the database says what must be done."""

from __future__ import annotations

import logging
from typing import Any

from flask import current_app
from redis.exceptions import RedisError
from rq import Queue
from rq.exceptions import DuplicateJobError

log = logging.getLogger(__name__)

QUEUE_NAME = "default"


def get_queue() -> Queue:
    """Return the app's RQ queue."""
    return Queue(QUEUE_NAME, connection=current_app.extensions["redis"])


def enqueue(func_path: str, *args: Any, job_id: str | None = None, timeout: int | None = None) -> bool:
    """Enqueue a job by dotted path; return False (and log) when Redis is not there.

    A lost enqueue is not lost work: the sweeper finds due rows in the database again. With a
    job_id, a job that is already queued under that id is not queued twice.
    """
    try:
        get_queue().enqueue(
            func_path,
            *args,
            job_id=job_id,
            job_timeout=timeout,
            unique=job_id is not None,
            result_ttl=60,
            failure_ttl=7 * 24 * 3600,
        )
    except DuplicateJobError:
        return True  # that very job is already waiting
    except RedisError as error:
        log.warning("could not enqueue %s%r: %s", func_path, args, error)
        return False
    return True
