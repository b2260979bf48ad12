"""Freshness: how long after a change is stored an open email log shows it. Two browsers watch the
same log over HTTP against gunicorn (flask up's settings): one only polls, at the interval the log
asks for (the fallback); one listens on the log's event stream and fetches the log when it rings
(the push), polling only as rarely as the log asks while its stream is open. Meanwhile this
process stores changes (an open, a click, a spam report ...) at random times; each delay is from
the commit to the answer that carries the change. The baseline is the interval before this work
(30 s after Delivered), against which the figures read.

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

import httpx

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
    web = processes.gunicorn("wsgi:app", env, settings=common.GEVENT_ARGS)
    headers = {"HX-Request": "true", "HX-Trigger": "email-log"}
    stored: list[float] = []  # commit times, in order
    seen: dict[str, list[float]] = {"poll": [], "push": []}  # when each browser first showed each
    intervals: dict[str, set[int]] = {"poll": set(), "push": set()}
    stop = threading.Event()
    rings = {kind: threading.Event() for kind in seen}

    jitter = random.Random(7)

    def browser(kind: str) -> None:
        http = common.sign_in(web, "clinician@example.com")
        ring = rings[kind]
        if kind == "push":
            stream_http = httpx.Client(base_url=web, cookies=http.cookies)
            threading.Thread(target=listen, args=(stream_http, ring), daemon=True).start()
        url, shown, interval = f"/clients/{client_id}/emails", 0, 1
        while not stop.is_set():
            response = http.get(url, headers=headers)
            now = time.monotonic()
            if response.status_code == 200:
                url = re.search(r'hx-get="([^"]+)"', response.text).group(1).replace("&amp;", "&")
                name = "data-stream-poll-seconds" if kind == "push" else "data-poll-seconds"
                interval = int(re.search(rf'{name}="(\d+)"', response.text).group(1))
                intervals[kind].add(interval)
                while shown < len(stored) and stored[shown] <= now:
                    seen[kind].append(now)
                    shown += 1
            # The push browser is woken by its stream; either way the timer is the fallback.
            if ring.wait(interval):
                # As static/js/app.js: a ring's fetch waits up to a second at random, so one batch
                # does not make every open log ask at once; rings meanwhile share that fetch.
                time.sleep(jitter.random())
                ring.clear()
        http.close()

    def listen(http: httpx.Client, ring: threading.Event) -> None:
        """The browser's EventSource: ring on open (fetch what changed meanwhile) and on each change."""
        stream_url = f"/clients/{client_id}/emails/stream"
        while not stop.is_set():
            try:
                with http.stream("GET", stream_url, timeout=httpx.Timeout(10, read=60)) as response:
                    for line in response.iter_lines():
                        if line.startswith("retry:") or line == "event: changed":
                            ring.set()
            except httpx.HTTPError:
                pass
            stop.wait(2)  # the stream's retry

    browsers = [threading.Thread(target=browser, args=(kind,)) for kind in seen]
    for thread in browsers:
        thread.start()
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
    common.wait_until(
        lambda: all(len(times) >= len(stored) for times in seen.values()),
        "the last change to show",
        timeout=90,
    )
    stop.set()
    for ring in rings.values():
        ring.set()
    for thread in browsers:
        thread.join()
    print(f"{len(stored)} changes (opens, clicks, a spam report) to one log open in two browsers")
    delays = {}
    for kind, label in (("poll", "polling only"), ("push", "event stream")):
        delays[kind] = [shown - made for made, shown in zip(stored, seen[kind], strict=True)]
        print(f"{label}: poll intervals {sorted(intervals[kind])} s")
        print(common.latency_line(f"change stored -> shown in the open log, {label}", delays[kind]))
    print(
        "baseline: before this work the log polled every 30 s after Delivered: up to 30 s, p95 about 28.5 s"
    )
    print(
        f"p95 {common.percentile(delays['push'], 0.95):.2f} s with the push, "
        f"{common.percentile(delays['poll'], 0.95):.2f} s polling only (goal <= 5 s)"
    )


if __name__ == "__main__":
    main()
