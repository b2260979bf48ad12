"""Freshness: how long after a change is stored an open email log shows it. A browser's polling
loop is played over HTTP against gunicorn (at the interval the log itself asks for), while this
process stores changes (an open, a click, a spam report ...) at random times; each delay is from
the commit to the poll answer that carries the change. The baseline is the interval before this
work (30 s after Delivered), against which the figures read.

    .venv/bin/python benchmarks/freshness.py [--changes 30] [--small]

Goal: p95 within 5 s for every status.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

KINDS = ["open", "click", "open", "click", "spamreport"]


def main() -> None:
    """Play the browser and the provider; print the delays."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=30)
    parser.add_argument("--small", action="store_true", help="CI: 3 changes")
    args = parser.parse_args()
    if args.small:
        args.changes = 3
    processes = common.Processes()
    env = common.app_env(
        common.psycopg_url(common.fresh_database("fresh")), processes.redis(), processes.folder
    )
    app = common.make_app(env)
    common.migrate(app)
    from webapp.extensions import db
    from webapp.models import Email, utcnow
    from webapp.providers.base import ProviderEvent
    from webapp.services import demo
    from webapp.services.events import Target, store_events

    with app.app_context():
        demo.seed(common.PASSWORD)
        email = db.session.execute(
            db.select(Email).where(Email.status == "delivered").order_by(Email.id.desc()).limit(1)
        ).scalar_one()
        email_id, client_id = email.id, email.client_id
        target = Target(email.id, email.clinic_id, email.client_id, email.to_address)
        app_message_id = email.app_message_id
    web = processes.gunicorn("wsgi:app", env)
    http = common.sign_in(web, "clinician@example.com")
    headers = {"HX-Request": "true", "HX-Trigger": "email-log"}
    stored: list[float] = []  # commit times, in order
    seen: list[float] = []  # when a poll first showed each
    intervals: set[int] = set()
    stop = threading.Event()

    def browser() -> None:
        url, shown = f"/clients/{client_id}/emails", 0
        while not stop.is_set():
            response = http.get(url, headers=headers)
            now = time.monotonic()
            if response.status_code == 200:
                url = re.search(r'hx-get="([^"]+)"', response.text).group(1).replace("&amp;", "&")
                interval = int(re.search(r'data-poll-seconds="(\d+)"', response.text).group(1))
                intervals.add(interval)
                while shown < len(stored) and stored[shown] <= now:
                    seen.append(now)
                    shown += 1
            stop.wait(interval if intervals else 1)

    poller = threading.Thread(target=browser)
    poller.start()
    time.sleep(2)
    rng = random.Random(3)
    with app.app_context():
        at = utcnow().replace(microsecond=0)
        for index in range(args.changes):
            time.sleep(rng.uniform(1.0, 6.0))
            kind = KINDS[index % len(KINDS)] if index < args.changes - 1 else "spamreport"
            extra = {"url": f"https://example.com/{index}"} if kind == "click" else {}
            event = ProviderEvent(
                kind, at + timedelta(seconds=index + 1), app_message_id=app_message_id, **extra
            )
            store_events({email_id: (target, [event])}, "webhook")
            db.session.commit()
            stored.append(time.monotonic())
    common.wait_until(lambda: len(seen) >= len(stored), "the last change to show", timeout=60)
    stop.set()
    poller.join()
    delays = [shown - made for made, shown in zip(stored, seen, strict=True)]
    print(
        f"{len(delays)} changes (opens, clicks, a spam report) to one open log; poll intervals {sorted(intervals)} s"
    )
    print(common.latency_line("change stored -> shown in the open log", delays))
    print(
        "baseline: before this work the log polled every 30 s after Delivered: up to 30 s, p95 about 28.5 s"
    )
    print(f"p95 {common.percentile(delays, 0.95):.2f} s (goal <= 5 s)")


if __name__ == "__main__":
    main()
