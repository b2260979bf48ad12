"""`flask scheduler`: rq cron's scheduler running the periodic jobs of jobs/cron.py (exactly one
scheduler runs), riding out Redis restarts: rq's own loop ends at the first lost connection.

Each start carries each job's schedule over from the scheduler before it (rq's own starts every
interval job at once, so a scheduler in a crash loop enqueued a sweep per restart), and removes
the registrations that schedulers killed on this host left in Redis.
"""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime

import click
from flask import Flask
from redis import Redis
from redis.exceptions import RedisError
from rq import cron_job_registry, cron_scheduler_registry
from rq.cron import CronScheduler
from rq.exceptions import StopRequested

from webapp.redis_outage import wait_for_redis

CRON_CONFIG = "jobs.cron"


class AppCron(CronScheduler):
    """rq cron's scheduler, remembering being asked to stop, as against losing Redis."""

    stop_asked = False

    def _request_stop(self, signum: int, frame: object) -> None:
        # A stop during an outage ends in a RedisError (rq's cleanup cannot reach Redis), which
        # must not be taken for the outage; a second signal must not cut that cleanup short.
        if self.stop_asked:
            return
        self.stop_asked = True
        super()._request_stop(signum, frame)


def run_scheduler(app: Flask) -> None:
    """Run the schedule until asked to stop; after a lost Redis, wait for it and start again.

    Call it in the app's context: jobs/cron.py reads the settings of the app it schedules for."""
    redis = app.extensions["redis"]
    cron = AppCron(connection=redis)
    cron.load_config_from_file(CRON_CONFIG)
    while not cron.stop_asked:
        try:
            forget_dead_schedulers(redis)
            resume_schedule(cron)  # a restart carries on the schedule: no burst of every job
            cron.start()
        except StopRequested:
            return
        except RedisError as error:
            if cron.stop_asked:
                return
            click.echo(f"scheduler: lost Redis ({error})", err=True)
            try:
                if not wait_for_redis(redis, "scheduler"):
                    return
            except StopRequested:
                return
        else:
            return


def resume_schedule(scheduler: CronScheduler) -> int:
    """Start each interval job's schedule from its last enqueue (rq records it in Redis), not from
    now; return how many jobs wait for their turn instead of being enqueued at once."""
    now = datetime.now(UTC)
    key = cron_job_registry.get_registry_key()
    waiting = 0
    for job in scheduler.get_jobs():
        if not job.interval or job.latest_enqueue_time is not None:
            continue  # a cron expression keeps its own times; a job already run keeps its own
        last = scheduler.connection.zscore(key, job.name)
        if last is None:
            continue
        # Never later than now: a clock set back must not hold a job for longer than its interval.
        job.set_enqueue_time(min(datetime.fromtimestamp(last, UTC), now))
        waiting += job.next_enqueue_time is not None and job.next_enqueue_time > now
    return waiting


def forget_dead_schedulers(connection: Redis) -> int:
    """Remove the registrations of schedulers of this host whose process is gone (a SIGKILL leaves
    them), and of any anywhere that stopped beating; return how many went."""
    removed = cron_scheduler_registry.cleanup(connection)
    host = socket.gethostname()
    for scheduler in CronScheduler.all(connection, cleanup=False):
        # Our own pid too: a predecessor that had it (a container restarted), or this scheduler's
        # registration from before Redis was lost, which would refuse to register it again.
        if scheduler.hostname == host and (scheduler.pid == os.getpid() or not _running(scheduler.pid)):
            with connection.pipeline() as pipeline:
                pipeline.zrem(cron_scheduler_registry.get_registry_key(), scheduler.name)
                pipeline.delete(scheduler.key)
                pipeline.execute()
            removed += 1
    return removed


def _running(pid: int) -> bool:
    """Whether a process of this pid runs (and is not a zombie waiting to be reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except (OSError, IndexError):
        return True
