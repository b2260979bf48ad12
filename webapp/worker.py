"""`flask worker`: an RQ worker on the app's queue, with the app preloaded, that rides out Redis
restarts.

Each job runs in a forked child (RQ's Worker), except the jobs named in IN_PROCESS, which run in
the worker itself: no fork, and the database connection is kept from job to job. RQ has no
per-job choice between the two, so AppWorker picks RQ's own SimpleWorker way for those jobs and
keeps the two places where RQ's Worker assumes a child (heartbeats, killing the child) right.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal

import click
from flask import Flask
from redis.exceptions import RedisError
from rq import SimpleWorker, Worker
from rq.exceptions import StopRequested
from rq.job import Job
from rq.queue import Queue

import jobs
from webapp.extensions import db
from webapp.providers import get_provider
from webapp.queue import get_queue
from webapp.redis_outage import OncePerOutage, wait_for_redis
from webapp.services.webhooks import APPLY_JOB

# How often a worker cleans RQ's registries (abandoned jobs, jobs stuck between queues).
MAINTENANCE_SECONDS = 60
# Short, set-based, idempotent database work: a fork and a new connection per job cost as much as
# the work (about 15 to 60 ms against 100 to 200 ms for 1,000 events). A job killed with its
# worker leaves its batches unapplied for the sweep, as a killed child would.
IN_PROCESS = frozenset({APPLY_JOB})
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# How long the command listener waits for a message before it looks whether to stop (RQ's: 60 s).
LISTEN_SECONDS = 1.0


class AppWorker(Worker):
    """An RQ worker that remembers being asked to stop, as against losing Redis, and runs the
    jobs named in `in_process` without forking."""

    in_process: frozenset[str] = IN_PROCESS
    stop_asked = False

    def request_stop(self, signum: int, frame: object) -> None:
        """Note the stop (RQ's loop ends the same way when Redis is lost), then stop as RQ does."""
        self.stop_asked = True
        super().request_stop(signum, frame)

    def execute_job(self, job: Job, queue: Queue) -> None:
        """Run an in-process job here, as SimpleWorker does; fork a child for any other."""
        if job.func_name in self.in_process:
            SimpleWorker.execute_job(self, job, queue)  # type: ignore[arg-type]
        else:
            super().execute_job(job, queue)

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        """Cover an in-process job's whole timeout: nobody sends heartbeats while it runs."""
        if job.func_name in self.in_process:
            return SimpleWorker.get_heartbeat_ttl(self, job, working_time)  # type: ignore[arg-type]
        return super().get_heartbeat_ttl(job, working_time)

    def subscribe(self) -> None:
        """Listen for RQ's commands (stop a job, shut down) as RQ does, looking every second
        whether to stop: RQ's teardown waits for the listener (redis-py 8's stop() waits whole),
        and one that has read the reply to RQ's unsubscribe waits for a new subscription."""
        self.log.info("Worker %s: subscribing to channel %s", self.name, self.pubsub_channel_name)
        self.pubsub = self.connection.pubsub()
        self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})
        self.pubsub_thread = self.pubsub.run_in_thread(
            sleep_time=LISTEN_SECONDS, daemon=True, exception_handler=self._pubsub_exception_handler
        )

    def kill_horse(self, sig: signal.Signals = signal.SIGKILL) -> None:
        """Kill the child running a job, if there is one.

        With no child (a job running in this process, as a stop-job command finds it), RQ would
        signal the process group of pid 0: our own, the worker itself included."""
        if self.horse_pid:
            super().kill_horse(sig)


def run_worker(app: Flask, burst: bool = False) -> None:
    """Preload the app, then work the queue; after RQ quits its loop (a Redis restart) wait for
    Redis and start it again, until asked to stop (or, with `burst`, once the queue is empty)."""
    jobs.use_app(app)
    # Built once here, not in every forked job: the provider's HTTP client (its SSL context)
    # costs 20 to 40 ms of CPU to make. It has sent nothing, so no connection is shared.
    get_provider(app.config)
    # Forked jobs get fresh database connections, not the parent's: the parent has none yet, and the
    # ones its in-process jobs keep are dropped (not closed: they stay the parent's) in each child.
    db.engine.dispose()
    engine = db.engine
    os.register_at_fork(after_in_child=lambda: engine.dispose(close=False))
    # The preloaded app's objects leave the collector's view: a child's collections would
    # otherwise walk, and so copy page by page, the parent's whole heap.
    gc.freeze()
    redis = app.extensions["redis"]
    logging.getLogger("rq.worker").addFilter(OncePerOutage())
    stop = {"asked": False}

    def note_stop(signum: int, _frame: object) -> None:
        stop["asked"] = True

    before = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    try:
        while not stop["asked"]:
            rq_worker = AppWorker([get_queue()], connection=redis, maintenance_interval=MAINTENANCE_SECONDS)
            try:
                rq_worker.work(burst=burst)
            except StopRequested:
                pass  # asked to stop as RQ's loop ended: its handler raises outside the loop too
            except RedisError as error:
                click.echo(f"worker: lost Redis ({error})", err=True)
            # RQ leaves its handlers in place: until the next loop, a stop is only noted.
            for sig in STOP_SIGNALS:
                signal.signal(sig, note_stop)
            _stop_listening(rq_worker)
            if burst or rq_worker.stop_asked or stop["asked"]:
                return
            # RQ quits its loop on most connection errors (a Redis restart): wait, then start again.
            if not wait_for_redis(redis, "worker", pause=1.0):
                return
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def _stop_listening(rq_worker: Worker) -> None:
    """Stop a finished worker's command listener, which RQ leaves running when Redis is gone."""
    thread = rq_worker.pubsub_thread
    if thread is not None and thread.is_alive():
        thread.stop()
        thread.join(timeout=1)
        with contextlib.suppress(RedisError, OSError):
            rq_worker.pubsub.close()  # type: ignore[union-attr]
