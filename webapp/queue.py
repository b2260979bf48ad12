"""Enqueue background work. Redis holds queues only: the database says what must be done."""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from flask import current_app
from redis.exceptions import RedisError, WatchError
from rq import Queue
from rq.exceptions import DuplicateJobError
from rq.executions import ExecutionRegistry
from rq.job import Job, JobStatus
from rq.registry import CanceledJobRegistry, FailedJobRegistry, FinishedJobRegistry, StartedJobRegistry
from rq.results import Result

from webapp.redis_keys import redis_key

log = logging.getLogger(__name__)

QUEUE_NAME = "default"
RESULT_TTL = 60
FAILURE_TTL = 7 * 24 * 3600  # kept for whoever looks into a failure; it never blocks a new job
# A worker moves a job out of its queue and starts it within milliseconds; a queued job seen out
# of its queue, not started, for this long lost its worker in between.
STRANDED_AFTER_SECONDS = 5.0
# A job in one of these states will run without our help.
WAITING = frozenset(
    {
        JobStatus.CREATED,
        JobStatus.QUEUED,
        JobStatus.SCHEDULED,
        JobStatus.DEFERRED,
        JobStatus.RATE_LIMITED,
        JobStatus.READY_TO_ENQUEUE,
    }
)


def get_queue() -> Queue:
    """Return the app's RQ queue."""
    return Queue(QUEUE_NAME, connection=current_app.extensions["redis"])


def enqueue(func_path: str, *args: Any, job_id: str | None = None, timeout: int | None = None) -> bool:
    """Enqueue a job by dotted path; return False (and log) when Redis is not there.

    A lost enqueue is not lost work: the sweeper finds due rows in the database again. With a
    job_id, a job that is waiting or running under that id is not queued twice, but one that
    ended (finished, failed, stopped, or abandoned by a worker that died) is queued again.
    `timeout` (seconds) stops a job that runs longer.
    """
    try:
        queue = get_queue()
        if job_id is None:
            queue.enqueue(
                func_path, *args, job_timeout=timeout, result_ttl=RESULT_TTL, failure_ttl=FAILURE_TTL
            )
            return True
        for _ in range(2):
            try:
                queue.enqueue(
                    func_path,
                    *args,
                    job_id=job_id,
                    job_timeout=timeout,
                    unique=True,
                    result_ttl=RESULT_TTL,
                    failure_ttl=FAILURE_TTL,
                )
                return True
            except DuplicateJobError:
                if not forget_ended_job(queue, job_id):
                    return True  # that very job is waiting or running
        return True  # another sweep queued it again between our two tries
    except RedisError as error:
        log.warning("could not enqueue %s%r: %s", func_path, args, error)
        return False


def forget_ended_job(queue: Queue, job_id: str) -> bool:
    """Delete the record of a job that will not run again; return False if it is waiting or running.

    RQ refuses a unique job while any record of its id exists, and keeps a failed job's record
    for days. The check and the delete are one transaction on the job's key: if a worker or
    another sweep touches the job meanwhile, nothing is deleted and the next sweep looks again.
    """
    connection = queue.connection
    job_key = Job.key_for(job_id)
    started = StartedJobRegistry(queue=queue).key
    stranded_key = redis_key("stranded-job", job_id)
    with connection.pipeline() as pipe:
        try:
            pipe.watch(job_key)
            raw_status = pipe.hget(job_key, "status")
            status = raw_status.decode() if raw_status else ""
            # Each execution's score is when its heartbeat expires: a worker that died (SIGKILL,
            # lost machine) leaves executions that have all expired.
            executions = list(pipe.zscan_iter(started, match=f"{_glob_escape(job_id)}:*"))
            running = any(score > time.time() for _, score in executions)
            if status == JobStatus.STARTED and running:
                return False
            if status in WAITING and not _stranded(pipe, queue, job_id, status, running, stranded_key):
                return False
            pipe.multi()
            pipe.delete(
                job_key, Result.get_key(job_id), ExecutionRegistry(job_id, connection).key, stranded_key
            )
            pipe.lrem(queue.intermediate_queue_key, 0, job_id)
            for registry in (FailedJobRegistry, FinishedJobRegistry, CanceledJobRegistry):
                pipe.zrem(registry(queue=queue).key, job_id)
            if executions:
                pipe.zrem(started, *[member for member, _ in executions])
            pipe.execute()
        except WatchError:
            return False
    if status:
        log.info("job %s had ended (%s); queuing it again", job_id, status)
    return True


def _stranded(pipe: Any, queue: Queue, job_id: str, status: str, running: bool, key: str) -> bool:
    """Return whether a job that says it is queued is in no queue and was not started, on two
    sightings some seconds apart (a worker that took it died before it started it)."""
    if status != JobStatus.QUEUED or running or pipe.lpos(queue.key, job_id) is not None:
        return False
    seen = pipe.get(key)
    if seen is None:
        pipe.set(key, repr(time.time()), ex=3600)
        return False
    return time.time() - float(seen) >= STRANDED_AFTER_SECONDS


def _glob_escape(text: str) -> str:
    """Escape the characters Redis MATCH patterns treat specially."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)
