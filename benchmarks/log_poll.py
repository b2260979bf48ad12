"""The email log's unchanged poll and a changed log's full render under load from a separate
process (wrk, else benchmarks/loadgen.py), beside a bare Flask endpoint on the same gunicorn
settings, measured in the same run. Also shown: /healthz (one SQL query), and what an open log's
polls cost per minute at the poll intervals.

    .venv/bin/python benchmarks/log_poll.py [--seconds 10] [--rounds 3] [--gevent] [--small]

Goals: the unchanged poll at least 0.70 of the bare endpoint; a changed log's full render at
least 0.15 of it.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

HERE = Path(__file__).resolve().parent


def load(url: str, headers: dict[str, str], seconds: float, connections: int) -> tuple[float, str]:
    """Requests per second from a separate process, and what it saw."""
    flags = [item for name, value in headers.items() for item in ("-H", f"{name}: {value}")]
    if shutil.which("wrk"):
        command = ["wrk", "-t2", f"-c{connections}", f"-d{max(1, int(seconds))}s", *flags, url]
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        rate = float(re.search(r"Requests/sec:\s*([\d.]+)", output).group(1))
        errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
        return rate, f"wrk, non-2xx: {errors.group(1) if errors else 0}"
    command = [sys.executable, str(HERE / "loadgen.py"), url, "--seconds", str(seconds)]
    command += ["--connections", str(connections), *flags]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"requests/s ([\d.]+)", output).group(1))
    return rate, "loadgen.py " + output.split("codes", 1)[1].strip()


def main() -> None:
    """Start the bare endpoint and the app and load each in turn."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3, help="turns each path's load is split into")
    parser.add_argument("--small", action="store_true", help="CI: one second per measurement")
    parser.add_argument(
        "--gevent",
        action="store_true",
        help="run every server on flask up's gevent settings (default: the gthread settings of earlier figures)",
    )
    args = parser.parse_args()
    if args.small:
        args.seconds, args.rounds = 1, 1
    processes = common.Processes()
    redis_url = processes.redis()
    database = common.psycopg_url(common.fresh_database("poll"))
    env = common.app_env(database, redis_url, processes.folder)
    app = common.make_app(env)
    common.migrate(app)
    from webapp.services import demo

    with app.app_context():
        demo.seed(common.PASSWORD)
        fast, slow = app.config["LOG_POLL_FAST_SECONDS"], app.config["LOG_POLL_SLOW_SECONDS"]
    settings = common.GEVENT_ARGS if args.gevent else common.GUNICORN_ARGS
    bare = processes.gunicorn(
        "bare_app:app", {"PYTHONPATH": str(HERE)}, ["--chdir", str(HERE)], settings=settings
    )
    web = processes.gunicorn("wsgi:app", env, settings=settings)
    client = common.sign_in(web, "clinician@example.com")
    headers = {**common.browser_headers(client), "HX-Trigger": "email-log"}

    def log_urls() -> tuple[str, str]:
        """The log's poll URL as just rendered (its "unchanged" answer lasts at most a minute), and
        one with a version the log no longer has: rendered in full, as when the log changed (its
        rows come from the row cache, as all but the changed ones do then)."""
        page = client.get("/clients/1").text
        url = re.search(r'id="email-log"[^>]*hx-get="([^"]+)"', page, re.S).group(1).replace("&amp;", "&")
        changed = re.sub(r"v=\w+-(\d+)", r"v=0-\1", url)
        for path, expect in ((url, 204), (changed, 200)):
            status = client.get(web + path, headers=headers).status_code
            if status != expect:
                raise SystemExit(f"benchmark: {path} answered {status}, not {expect}")
        return url, changed

    rows = [
        ("baseline: bare Flask endpoint (same gunicorn settings)", lambda: (bare + "/", {})),
        ("unchanged log poll, fast path (204)", lambda: (web + log_urls()[0], headers)),
        ("changed log, full render (200)", lambda: (web + log_urls()[1], headers)),
        ("/healthz (one SQL query + Redis ping)", lambda: (web + "/healthz", {})),
    ]
    load_average = " ".join(f"{value:.2f}" for value in os.getloadavg())
    print(
        f"gunicorn {' '.join(settings)}; {args.connections} connections, {args.seconds:g} s each in "
        f"{args.rounds} rounds taking turns; load average {load_average}"
    )
    print(f"{'path':58} {'req/s':>9}  load")
    # In turns, a share of the time each: the machine's load drifts less between them.
    seen: list[list[tuple[float, str]]] = [[] for _ in rows]
    for _ in range(args.rounds):
        for index, (_label, target) in enumerate(rows):
            url, extra = target()
            seen[index].append(load(url, extra, args.seconds / args.rounds, args.connections))
    rates = []
    for (label, _target), measured in zip(rows, seen, strict=True):
        rate = sum(each for each, _ in measured) / len(measured)
        rates.append(rate)
        print(f"{label:58} {rate:9,.0f}  {'; '.join(what for _, what in measured)}")
    ratio, render = rates[1] / rates[0], rates[2] / rates[0]
    print(f"unchanged poll vs bare endpoint: {ratio:.2f} (goal >= 0.70)")
    print(f"changed log's full render vs bare endpoint: {render:.3f} (goal >= 0.15)")
    # Cost of one open log's polls per minute, in bare-request units (1 / ratio each).
    print(
        f"one open log's unchanged polls per minute, in bare-request units ({fast} s in flight, "
        f"{slow} s settled; the polling a log falls back to without its event stream, see log_push.py): "
        f"in flight {60 / fast / ratio:.1f}, settled {60 / slow / ratio:.1f}"
    )


if __name__ == "__main__":
    main()
