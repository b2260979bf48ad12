"""Every Redis key the app writes carries REDIS_KEY_PREFIX (RQ's own keys carry RQ's prefix), so
two apps can share one Redis: shown by listing the keys after a flow that touches each kind."""

from __future__ import annotations

import pytest
from rq.defaults import RQ_KEY_PREFIX

from tests.helpers import attempt, login, run_jobs
from webapp import clock
from webapp.freshness import counters as changes
from webapp.freshness import quota as stream_quota
from webapp.services import polling, send_rate_limit, sending, webhook_guard, webhooks

PREFIX = "flow-test:"
# Each kind of key the flow below writes, as named after the prefix.
KINDS = {
    "session-live",  # a signed-in session's live mark
    "login-delay",  # a failed sign-in's delay
    "limits",  # Flask-Limiter's counters
    "attention-count",  # the Needs attention total
    "emaillog",  # a client's log counter
    "records-budget",  # the provider's shared request budget
    "activity-blocked-until",  # the provider said 429 to a poll
    "send-blocked-until",  # the provider said 429 to a send
    "webhook-seen",  # a webhook delivery's replay mark
    "webhook-refused",  # refused webhook credentials
    "log-streams",  # a user's open log streams
}


@pytest.mark.parametrize("prefix", [PREFIX, "{tenant-a}:"])
def test_every_key_after_a_representative_flow_carries_the_prefix(app, world, make_app, app_clock, prefix):
    flow = make_app(REDIS_KEY_PREFIX=prefix, RATELIMIT_ENABLED=True, SANDBOX_SPEED=1000.0)
    redis = flow.extensions["redis"]
    redis.flushdb()
    browser = flow.test_client()
    assert attempt(browser, "clinician@a.example", "wrong", "192.0.2.7").status_code == 401
    login(browser, "clinician@a.example")
    assert browser.get(f"/clients/{world.client_a.id}").status_code == 200
    with flow.app_context():
        sending.queue_email(world.client_a, kind="receipt", subject="Receipt", body="Thanks", sent_by=None)
        run_jobs(flow)
        app_clock.advance(600)  # the provider has news of the email: poll for it
        polling.poll_due()
        polling.block_polling(30)
        send_rate_limit.block_sends(30)
        assert webhooks.first_delivery("sendgrid", "a signed body", 60)
        webhook_guard.note_refused("sendgrid")
        assert stream_quota.claim(redis, world.users["clinician"].id, "stream", clock.timestamp(), 60, 3)
        assert changes.log_channel(1, 2).startswith(prefix)
    assert browser.get("/attention").status_code == 200  # its total was dropped when the log changed

    keys = sorted(key.decode() for key in redis.keys("*"))
    ours = [key.removeprefix(prefix) for key in keys if key.startswith(prefix)]
    theirs = [key for key in keys if key.startswith(f"{RQ_KEY_PREFIX}:")]  # RQ's queue and jobs
    assert sorted([*(prefix + key for key in ours), *theirs]) == keys
    assert {key.split(":")[0] for key in ours} >= KINDS
    assert theirs, "the flow queued jobs"
