"""Periodic jobs for `flask --app wsgi scheduler` or `rq cron jobs.cron` (exactly one such process runs).

`flask scheduler` (webapp/scheduler.py) also carries each job's schedule over from the scheduler
before it and removes the registrations that dead schedulers left in Redis.
"""

from flask import current_app, has_app_context
from rq import cron

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
