"""Periodic jobs for `flask --app wsgi scheduler` or `rq cron jobs.cron` (exactly one such process runs)."""

from rq import cron

from jobs.maintenance import sandbox_tick, sweep, sync_spam_list
from jobs.polling import poll_provider
from jobs.removals import sweep_checks, sweep_lifts
from jobs.retention import purge_old_records

cron.register(poll_provider, "default", interval=5, result_ttl=60)
cron.register(sweep, "default", interval=15, result_ttl=60)
cron.register(sync_spam_list, "default", interval=600, result_ttl=60)
cron.register(sandbox_tick, "default", interval=3, result_ttl=60)
cron.register(sweep_lifts, "default", interval=300, result_ttl=60)
cron.register(sweep_checks, "default", interval=60, result_ttl=60)
cron.register(purge_old_records, "default", interval=3600, result_ttl=3600, job_timeout=300)
