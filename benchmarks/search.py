"""Client search over 100,000 clients (seed-load's data: 5,000 clinics, the first one holding a
twentieth of all clients), requested over HTTP from this process to gunicorn, beside a bare Flask
endpoint and /healthz in the same run.

    .venv/bin/python benchmarks/search.py [--clients 100000] [--database URL] [--small]

Goal: p50 under 20 ms in the biggest clinic.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from log_partial import timings  # noqa: E402

HERE = Path(__file__).resolve().parent
QUERIES = ["smith", "ada", "jones7", "zz-nobody", "example.com", "lee", "sara.patel", "12"]


def main() -> None:
    """Seed (or reuse) clients, start gunicorn, time searches and the baselines."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--database", help="a database made by seed-load (password: --password)")
    parser.add_argument("--password", default=common.PASSWORD)
    parser.add_argument("--small", action="store_true", help="CI: 2,000 clients, 20 requests")
    args = parser.parse_args()
    if args.small:
        args.clients, args.requests = 2_000, 20
    processes = common.Processes()
    database = args.database or common.fresh_database("search")
    env = common.app_env(common.psycopg_url(database), processes.redis(), processes.folder)
    if not args.database:
        app = common.make_app(env)
        common.migrate(app)
        from webapp.services import load_data

        with app.app_context():
            sizes = load_data.LoadSizes(max(1, args.clients // 20), args.clients, args.clients)
            load_data.seed_load(sizes, common.PASSWORD, say=lambda _line: None)
    bare = processes.gunicorn("bare_app:app", {"PYTHONPATH": str(HERE)}, ["--chdir", str(HERE)])
    web = processes.gunicorn("wsgi:app", env)
    http = common.sign_in(web, "clinician1@load.example", args.password)
    searches = []
    for query in itertools.islice(itertools.cycle(QUERIES), args.requests):
        searches += timings(http, f"/clients?q={query}", 1)
    pages = timings(http, "/clients?page=3", args.requests)
    print(f"{args.clients:,} clients; the biggest clinic has {max(1, args.clients // 20):,}; sequential HTTP")
    print(common.latency_line("baseline: bare Flask endpoint", timings(http, bare + "/", args.requests)))
    print(common.latency_line("baseline: /healthz (one SQL query)", timings(http, "/healthz", args.requests)))
    print(common.latency_line("client list, page 3, no query", pages))
    print(common.latency_line("client search (goal: p50 < 20 ms)", searches))


if __name__ == "__main__":
    main()
