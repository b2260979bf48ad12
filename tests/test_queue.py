"""Unique jobs against a real Redis: a job that is waiting or running is never queued twice, and
one that ended in any way (finished, failed, stopped, abandoned) never blocks its work."""

from __future__ import annotations

import time
from datetime import timedelta

from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, StartedJobRegistry

from tests.helpers import run_jobs
from webapp.extensions import db
from webapp.models import WebhookBatch, utcnow
from webapp.queue import enqueue, get_queue
from webapp.services import maintenance, webhooks

JOB_ID = "send-4242"


def works() -> str:
    """A job that succeeds."""
    return "done"


def breaks() -> None:
    """A job that fails, as a killed work-horse does."""
    raise RuntimeError("work-horse killed")


def status_of(job_id: str) -> str:
    return Job.fetch(job_id, connection=get_queue().connection).get_status()


def test_a_waiting_job_is_not_queued_twice(app):
    assert enqueue("tests.test_queue.works", job_id=JOB_ID)
    assert enqueue("tests.test_queue.works", job_id=JOB_ID)
    assert get_queue().job_ids == [JOB_ID]


def test_a_failed_job_does_not_block_its_work(app):
    enqueue("tests.test_queue.breaks", job_id=JOB_ID)
    run_jobs(app)
    assert status_of(JOB_ID) == JobStatus.FAILED
    assert enqueue("tests.test_queue.works", job_id=JOB_ID)
    assert get_queue().job_ids == [JOB_ID]
    assert JOB_ID not in FailedJobRegistry(queue=get_queue()).get_job_ids()
    run_jobs(app)
    assert status_of(JOB_ID) == JobStatus.FINISHED


def test_a_finished_stopped_or_canceled_job_is_queued_again(app):
    enqueue("tests.test_queue.works", job_id=JOB_ID)
    run_jobs(app)
    assert enqueue("tests.test_queue.works", job_id=JOB_ID)
    assert get_queue().job_ids == [JOB_ID]
    for status in (JobStatus.STOPPED, JobStatus.CANCELED):
        job = Job.fetch(JOB_ID, connection=get_queue().connection)
        get_queue().remove(job)
        job.set_status(status)
        assert enqueue("tests.test_queue.works", job_id=JOB_ID)
        assert get_queue().job_ids == [JOB_ID], status


def test_a_running_job_is_left_alone_until_its_worker_is_gone(app):
    """A worker killed outright (SIGKILL of the whole process group) leaves its job "started";
    once its heartbeat has expired the job is abandoned and its work is queued again."""
    queue = get_queue()
    enqueue("tests.test_queue.works", job_id=JOB_ID)
    job = Job.fetch(JOB_ID, connection=queue.connection)
    queue.remove(job)
    job.set_status(JobStatus.STARTED)
    started = StartedJobRegistry(queue=queue)
    queue.connection.zadd(started.key, {f"{JOB_ID}:execution-1": time.time() + 60})
    assert enqueue("tests.test_queue.works", job_id=JOB_ID)
    assert queue.job_ids == []  # really running: no second copy
    queue.connection.zadd(started.key, {f"{JOB_ID}:execution-1": time.time() - 1})
    assert enqueue("tests.test_queue.works", job_id=JOB_ID)
    assert queue.job_ids == [JOB_ID]
    assert queue.connection.zcard(started.key) == 0


def test_a_webhook_batch_whose_job_failed_is_applied_by_the_next_sweep(app, world):
    batch = webhooks.store_batch("sendgrid", b"[]")
    enqueue("tests.test_queue.breaks", job_id=f"batch-{batch.id}")
    run_jobs(app)
    assert maintenance.sweep(utcnow() + timedelta(minutes=1))["batches"] == 1
    run_jobs(app)
    db.session.expire_all()
    assert db.session.get(WebhookBatch, batch.id).applied_at is not None


def test_a_job_taken_by_a_worker_that_died_before_starting_it_is_queued_again(app, monkeypatch):
    """RQ moves a job out of its queue, then starts it; a worker killed in between leaves it
    "queued" in no queue. Seen so twice, seconds apart, it is queued again."""
    import webapp.queue

    queue = get_queue()
    enqueue("tests.test_queue.works", job_id=JOB_ID)
    queue.connection.lmove(queue.key, queue.intermediate_queue_key)  # what a worker does first
    assert enqueue("tests.test_queue.works", job_id=JOB_ID)
    assert queue.job_ids == []  # the first sighting: a worker may be starting it this instant
    monkeypatch.setattr(webapp.queue, "STRANDED_AFTER_SECONDS", 0.0)
    assert enqueue("tests.test_queue.works", job_id=JOB_ID)
    assert queue.job_ids == [JOB_ID]
    assert queue.connection.llen(queue.intermediate_queue_key) == 0
    assert enqueue("tests.test_queue.works", job_id=JOB_ID)
    assert queue.job_ids == [JOB_ID]  # back in its queue: waiting, not queued twice
