"""The poller: one cycle with 1,000 emails that can still change (due for a poll, every one with
new events from the provider), over 10,000 and over 1,000,000 emails of history. The provider is
a stub that answers at once, so the cycle measures our side only (selection, locking, applying,
rescheduling). The baseline is the same cycle over the small history, in the same run.

    .venv/bin/python benchmarks/poller.py [--due 1000] [--database URL] [--small]

Goal: the cycle over 1,000,000 emails takes at most 1.5 times the one over 10,000.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from webapp.providers.base import EmailProvider, PollRef, PollResult, ProviderEvent  # noqa: E402


class StubProvider(EmailProvider):
    """Answers every poll at once: each email got a delivery and an open since the last poll."""

    name = "stub"

    def __init__(self) -> None:
        self.round = 0

    def poll(self, refs: list[PollRef], request_budget: int) -> PollResult:
        from webapp.models import utcnow

        self.round += 1
        at = utcnow().replace(microsecond=0) - timedelta(seconds=self.round)
        events = {
            ref.app_message_id: [
                ProviderEvent("delivered", at, app_message_id=ref.app_message_id),
                ProviderEvent("open", at + timedelta(seconds=1), app_message_id=ref.app_message_id),
            ]
            for ref in refs
        }
        return PollResult(events=events, requests_made=1, covered=frozenset(events))

    def send(self, message):  # noqa: ANN001, ANN201 - not used here
        raise NotImplementedError

    def find_accepted(self, refs, request_budget):  # noqa: ANN001, ANN201
        raise NotImplementedError

    def spam_reports(self, since=None):  # noqa: ANN001, ANN201
        return []

    def remove_spam_report(self, address):  # noqa: ANN001, ANN201
        raise NotImplementedError

    def verify_webhook(self, headers, body, now):  # noqa: ANN001, ANN201 - no webhook here
        raise NotImplementedError

    def parse_webhook(self, body):  # noqa: ANN001, ANN201
        raise NotImplementedError


def cycles(env: dict[str, str], due: int, rounds: int) -> tuple[int, list[float]]:
    """Make `due` emails due for a poll, run `rounds` cycles (each re-arms them); return history, seconds."""
    from webapp.extensions import db
    from webapp.services import polling

    app = common.make_app(env, POLL_BATCH_SIZE=due, ACTIVITY_REQUESTS_PER_MINUTE=10**6)
    provider = StubProvider()
    seconds = []
    with app.app_context():
        history = db.session.execute(sa.text("SELECT count(*) FROM email")).scalar()
        ids = (
            db.session.execute(
                sa.text("SELECT id FROM email WHERE status = 'delivered' ORDER BY id DESC LIMIT :n"),
                {"n": due},
            )
            .scalars()
            .all()
        )
        for _ in range(rounds + 1):
            # Still changing: sent minutes ago, due now, not yet opened.
            db.session.execute(
                sa.text(
                    "UPDATE email SET next_poll_at = now() - interval '1 second', status = 'processed',"
                    " created_at = now() - interval '5 minutes', send_state = 'accepted' WHERE id = ANY(:ids)"
                ),
                {"ids": list(ids)},
            )
            db.session.execute(
                sa.text(
                    "DELETE FROM email_event WHERE email_id = ANY(:ids) AND kind IN ('delivered', 'open')"
                ),
                {"ids": list(ids)},
            )
            db.session.commit()
            started = time.perf_counter()
            changed = polling._poll_batch(provider, polling.utcnow())
            seconds.append(time.perf_counter() - started)
            if changed != len(ids):
                raise SystemExit(f"benchmark: {changed} of {len(ids)} emails changed")
    return history, seconds[1:]


def main() -> None:
    """Seed two histories (or reuse a large one), time poll cycles over each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--due", type=int, default=1000)
    parser.add_argument("--small-history", type=int, default=10_000)
    parser.add_argument("--large-history", type=int, default=1_000_000)
    parser.add_argument("--database", help="the large history: a database made by seed-load")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--small", action="store_true", help="CI: 100 due over 2,000 and 20,000 emails")
    args = parser.parse_args()
    if args.small:
        args.due, args.small_history, args.large_history, args.rounds = 100, 2_000, 20_000, 2
    processes = common.Processes()
    redis_url = processes.redis()
    from webapp.services import load_data

    urls = []
    for size, given in ((args.small_history, None), (args.large_history, args.database)):
        url = common.psycopg_url(given or common.fresh_database(f"poller{size}"))
        if not given:
            env = common.app_env(url, redis_url, processes.folder)
            app = common.make_app(env)
            common.migrate(app)
            with app.app_context():
                sizes = load_data.LoadSizes(max(1, size // 200), max(1, size // 10), size)
                load_data.seed_load(sizes, common.PASSWORD, say=lambda _line: None)
        urls.append(url)
    results = [
        cycles(common.app_env(url, redis_url, processes.folder), args.due, args.rounds) for url in urls
    ]
    print(f"one poll cycle: {args.due:,} emails due, each with new events; median of {args.rounds} cycles")
    medians = []
    for label, (history, seconds) in zip(("baseline: small history", "large history"), results, strict=True):
        medians.append(statistics.median(seconds))
        print(
            f"{label:26} {history:>11,} emails  {medians[-1] * 1000:8.1f} ms  ({args.due / medians[-1]:,.0f} emails/s)"
        )
    print(f"large / small: {medians[1] / medians[0]:.2f} (goal <= 1.5)")


if __name__ == "__main__":
    main()
