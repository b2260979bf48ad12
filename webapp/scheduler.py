"""`flask scheduler`: rq cron's scheduler running the periodic jobs of jobs/cron.py (exactly one
scheduler runs), riding out Redis restarts: rq's own loop ends at the first lost connection."""

from __future__ import annotations

import click
from flask import Flask
from redis.exceptions import RedisError
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
