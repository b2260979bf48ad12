"""Periodic jobs for `flask --app wsgi scheduler` or `rq cron jobs.cron` (exactly one such process runs).

`flask scheduler` also carries each job's schedule over from the scheduler before it (rq's own
starts every interval job at once, so a scheduler in a crash loop enqueued a sweep per restart),
and removes the registrations that schedulers killed on this host left in Redis.
"""

import os
import socket
from datetime import UTC, datetime

from flask import current_app, has_app_context
from redis import Redis
from rq import cron, cron_job_registry, cron_scheduler_registry
from rq.cron import CronScheduler

from jobs import app_context
from jobs.maintenance import sandbox_tick, sweep, sync_spam_list
from jobs.polling import poll_provider
from jobs.removals import sweep_checks, sweep_lifts
from jobs.retention import purge_old_records


def sandbox_configured() -> bool:
    """Return whether the settings run the sandbox with a webhook to post to (the demo only)."""
    if has_app_context():  # `flask scheduler`
        config = current_app.config
    else:  # `rq cron jobs.cron`: the settings of the app the jobs will run in
        with app_context() as app:
            config = app.config
    return config["EMAIL_PROVIDER"] == "sandbox" and bool(config["SANDBOX_WEBHOOK_URL"])


cron.register(poll_provider, "default", interval=5, result_ttl=60)
cron.register(sweep, "default", interval=15, result_ttl=60)
cron.register(sync_spam_list, "default", interval=600, result_ttl=60)
if sandbox_configured():
    # The simulated provider's webhook posts; a real provider posts by itself.
    cron.register(sandbox_tick, "default", interval=3, result_ttl=60)
cron.register(sweep_lifts, "default", interval=300, result_ttl=60)
cron.register(sweep_checks, "default", interval=60, result_ttl=60)
cron.register(purge_old_records, "default", interval=3600, result_ttl=3600, job_timeout=300)


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
