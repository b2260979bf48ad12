"""The worker's changes to RQ (webapp/worker.py) and the scheduler's (webapp/scheduler.py), each
against a real Redis: jobs run in the worker's own process or forked as meant, a stop-job command
cannot kill the worker, its command listener stops at once, and both ride out a Redis restart yet
stop when told to, even mid-outage.

The processes are real (their waits are bounded polls of wall time, see tests/faults.py); the
in-process test runs RQ's loop in this process.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import pytest
from rq import Queue
from rq.command import send_stop_job_command
from rq.job import Job, JobStatus

from tests.faults import FLASK, Processes, child_env, free_port, wait_for
from tests.helpers import kept_stop_handlers, run_jobs
from webapp.queue import QUEUE_NAME, get_queue
from webapp.worker import AppWorker

# A worker of our class in a process of its own, working the queue once, RQ's debug lines shown.
WORKER_SCRIPT = """
import sys
from redis import Redis
from webapp.worker import AppWorker
worker = AppWorker([sys.argv[2]], connection=Redis.from_url(sys.argv[1]))
worker.in_process = frozenset(sys.argv[3:])
worker.work(burst=True, logging_level="DEBUG")
"""


@pytest.fixture
def processes(tmp_path):
    """Processes the test starts; stopped and checked afterwards."""
    started = Processes(tmp_path)
    yield started
    assert started.stop() == [], "a process outlived its process group"


@pytest.fixture
def signal_handlers():
    """RQ's loop run here installs its own SIGINT and SIGTERM handlers: put pytest's back."""
    with kept_stop_handlers():
        yield


def test_jobs_run_in_the_test_process_leave_its_ctrl_c_as_it_was(app):
    # run_jobs runs RQ's loop here, which takes over SIGINT and SIGTERM and leaves its own handlers:
    # Ctrl-C would then only ask a finished worker to stop, and a serial test run would go on.
    before = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
    with app.app_context():
        get_queue().enqueue("tests.worker_jobs.report", "ran")
    run_jobs(app)
    assert app.extensions["redis"].llen("ran") == 1  # RQ's loop did run here
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def started(job: Job) -> bool:
    return job.get_status(refresh=True) == JobStatus.STARTED


def test_an_in_process_job_runs_in_the_worker_counted_alive_for_its_whole_timeout(make_app, signal_handlers):
    """No fork for the jobs of `in_process`; and, as no heartbeat comes while one runs, RQ counts
    it as running for its whole timeout (the sweep re-queues a job whose executions all expired).
    Any other job forks, with RQ's own short heartbeat deadline."""
    redis = make_app().extensions["redis"]
    queue = Queue(QUEUE_NAME, connection=redis)
    queue.enqueue("tests.worker_jobs.report", "ran", job_timeout=600)
    queue.enqueue("tests.worker_jobs.report_in_child", "ran", job_timeout=600)
    worker = AppWorker([queue], connection=redis)
    worker.in_process = frozenset({"tests.worker_jobs.report"})

    worker.work(burst=True)

    (here, here_alive), (child, child_alive) = (line.split() for line in redis.lrange("ran", 0, -1))
    assert int(here) == os.getpid()
    assert int(here_alive) >= 600
    assert int(child) != os.getpid()
    assert int(child_alive) < 600  # RQ's: the monitoring interval and a minute, beaten on


def test_a_stop_command_for_an_in_process_job_leaves_the_worker_running(make_app, processes):
    """RQ's stop-job command kills the job's child; a job running in the worker itself has none,
    and RQ would signal the worker's own process group instead. The job runs to its end."""
    app = make_app()
    redis = app.extensions["redis"]
    queue = Queue(QUEUE_NAME, connection=redis)
    job = queue.enqueue("tests.worker_jobs.wait_for_key", "go")
    queue.enqueue("tests.worker_jobs.report_in_child", "ran")
    command = [sys.executable, "-c", WORKER_SCRIPT, app.config["REDIS_URL"], QUEUE_NAME, job.func_name]
    worker = processes.start("worker", command, child_env(app))
    wait_for(lambda: started(job), 30, what="the in-process job to start")

    send_stop_job_command(redis, job.id)
    wait_for(lambda: worker.poll() is not None or "command to stop job" in processes.log(worker), 10)
    redis.set("go", 1)

    assert worker.wait(timeout=30) == 0, processes.log(worker)
    assert job.get_status(refresh=True) == JobStatus.FINISHED
    assert redis.llen("ran") == 1  # and the worker went on to the next job


def test_the_command_listener_stops_within_a_second_whatever_it_was_doing(make_app):
    """RQ's teardown unsubscribes its command listener, then stops it with redis-py's stop(),
    which (redis-py 8) waits for the thread; a listener that has already read the unsubscribe's
    reply waits for a new subscription as long as it listens at a time (RQ's: a minute)."""
    redis = make_app().extensions["redis"]
    worker = AppWorker([Queue(QUEUE_NAME, connection=redis)], connection=redis)
    worker.subscribe()
    worker.pubsub.unsubscribe()
    wait_for(lambda: not worker.pubsub.subscribed, 10, what="the listener to read the reply")

    began = time.monotonic()
    worker.unsubscribe()

    assert time.monotonic() - began < 3
    assert not worker.pubsub_thread.is_alive()


def test_the_worker_rides_out_a_redis_restart_and_stops_when_told(make_app, processes, tmp_path):
    """Redis goes away while a job runs, so RQ's loop ends at its bookkeeping: `flask worker`
    waits for Redis, starts the loop again and runs the next job; then SIGTERM stops it (RQ's
    loop ends the same way on a stop: the worker must not take that for a lost Redis)."""
    port = free_port()
    redis_server = processes.redis_server(port)
    app = make_app(REDIS_URL=f"redis://127.0.0.1:{port}/0")
    redis = app.extensions["redis"]
    queue = Queue(QUEUE_NAME, connection=redis)
    flag = tmp_path / "go"
    job = queue.enqueue("tests.worker_jobs.wait_for_file", str(flag))
    worker = processes.worker(app)
    wait_for(lambda: started(job), 60, what="the job to start")

    redis_server.kill()
    redis_server.wait()
    flag.touch()
    wait_for(lambda: "worker: Redis does not answer" in processes.log(worker), 30, what="the outage noticed")
    processes.redis_server(port)  # back, and empty
    wait_for(lambda: "worker: Redis answers again" in processes.log(worker), 30, what="Redis seen again")
    queue.enqueue("tests.worker_jobs.report_in_child", "ran")
    wait_for(lambda: redis.llen("ran"), 30, what="a job run after the restart")

    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=10) == 0
    assert "starting it again" not in processes.log(worker)


def test_the_worker_told_to_stop_during_an_outage_stops(make_app, processes):
    """Idle, Redis gone, RQ retrying on its own: SIGTERM ends RQ's loop, whose cleanup cannot
    reach Redis; the worker stops rather than wait for a Redis that may never come back."""
    port = free_port()
    redis_server = processes.redis_server(port)
    app = make_app(REDIS_URL=f"redis://127.0.0.1:{port}/0")
    worker = processes.worker(app)
    wait_for(lambda: "Listening on" in processes.log(worker), 60, what="the worker to listen")

    redis_server.kill()
    redis_server.wait()
    wait_for(lambda: "could not connect to Redis" in processes.log(worker), 30, what="RQ to retry")
    worker.send_signal(signal.SIGTERM)

    assert worker.wait(timeout=10) == 0, processes.log(worker)


def test_the_scheduler_rides_out_a_redis_restart_and_stops_when_told(make_app, processes):
    """rq cron's loop ends at the first lost connection: `flask scheduler` waits for Redis and
    schedules again (the restarted Redis is empty: the jobs are queued again); SIGTERM stops it."""
    port = free_port()
    redis_server = processes.redis_server(port)
    app = make_app(REDIS_URL=f"redis://127.0.0.1:{port}/0")
    redis = app.extensions["redis"]
    queue = Queue(QUEUE_NAME, connection=redis)
    scheduler = processes.start("scheduler", [*FLASK, "scheduler"], child_env(app))
    wait_for(lambda: len(queue), 60, what="the first periodic jobs")

    redis_server.kill()
    redis_server.wait()
    wait_for(lambda: "scheduler: Redis does not answer" in processes.log(scheduler), 30, what="the outage")
    processes.redis_server(port)  # back, and empty
    wait_for(lambda: len(queue), 30, what="periodic jobs after the restart")

    scheduler.send_signal(signal.SIGTERM)
    assert scheduler.wait(timeout=10) == 0
    assert "scheduler: Redis answers again" in processes.log(scheduler)


def test_the_scheduler_told_to_stop_as_redis_goes_stops(make_app, processes):
    """SIGTERM while rq cron sleeps, Redis just gone: rq's cleanup fails on the lost Redis, and
    the scheduler must not take that for an outage to wait out."""
    port = free_port()
    redis_server = processes.redis_server(port)
    app = make_app(REDIS_URL=f"redis://127.0.0.1:{port}/0")
    queue = Queue(QUEUE_NAME, connection=app.extensions["redis"])
    scheduler = processes.start("scheduler", [*FLASK, "scheduler"], child_env(app))
    wait_for(lambda: len(queue), 60, what="the first periodic jobs")

    redis_server.kill()
    redis_server.wait()
    scheduler.send_signal(signal.SIGTERM)

    assert scheduler.wait(timeout=10) == 0, processes.log(scheduler)
    assert "Redis does not answer" not in processes.log(scheduler)
