"""What open email logs cost the web server per minute: polling (the fallback) against
the push (an event stream per open log, fed by Redis pub/sub), in the web server's CPU seconds,
counted in bare-request units (the CPU of one request to a bare Flask endpoint on the same
gunicorn settings, measured in the same run). All on flask up's settings (gevent).

Each piece is measured on its own, as the server's CPU time (all its processes) over many
requests, then put together per open log and minute:
  - an unchanged poll answered in front of Flask (204);
  - a full render of the log (a client's demo history): a polling log does one a minute, when
    its "unchanged" answer runs out; a log with its stream open, one per LOG_POLL_STREAM_SECONDS
    (each real change costs one in every mode, and is left out);
  - an open stream that hears nothing for a minute (heartbeats, live checks), `--streams` at once;
  - opening a stream, which each open log does once per stream lifetime (LOG_STREAM_SECONDS),
    with the poll the browser makes when it opens.

    .venv/bin/python benchmarks/log_push.py [--streams 200] [--seconds 60] [--small]

Goal: the push costs no more per open log than polling did before it (30 s after Delivered, each
poll through the Flask view: 20.7 and 16.7 bare requests a minute when last measured, see
docs/benchmarks-history.md); printed beside it, polling today (the fallback) in the same run.
"""

from __future__ import annotations

import argparse
import re
import socket
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

HERE = Path(__file__).resolve().parent
PUSH = "push (stream open), settled or in flight"


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and all its children so far."""
    parent = psutil.Process(pid)
    total = 0.0
    for process in [parent, *parent.children(recursive=True)]:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def cpu_per_request(pid: int, url: str, headers: dict[str, str], count: int, expect: int) -> float:
    """The server's CPU seconds per request, over `count` requests from 4 client threads."""

    def run(share: int) -> None:
        with httpx.Client(timeout=30, headers=headers) as http:
            for _ in range(share):
                status = http.get(url).status_code
                if status != expect:
                    raise SystemExit(f"benchmark: {url} answered {status}, not {expect}")

    before = cpu_seconds(pid)
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(run, [count // 4] * 4))
    return (cpu_seconds(pid) - before) / (count // 4 * 4)


def open_stream(port: int, path: str, headers: dict[str, str]) -> socket.socket:
    """Open an event stream as EventSource does; return the socket once its first bytes came."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    browser = f"Cookie: {headers['Cookie']}\r\nUser-Agent: {headers['User-Agent']}"
    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n{browser}\r\n\r\n"
    )
    sock.sendall(request.encode())
    data = b""
    while b"retry:" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    if not data.startswith(b"HTTP/1.1 200"):
        raise SystemExit(f"benchmark: the stream answered {data[:60]!r}")
    return sock


def read_to_end(sock: socket.socket) -> None:
    """Read until the server ends the stream."""
    while sock.recv(65536):
        pass
    sock.close()


def measure(label: str, work: Callable[[], float]) -> float:
    """Run one measurement and say what it gave."""
    value = work()
    print(f"  {label:62} {value * 1e3:8.3f} ms CPU")
    return value


def main() -> None:
    """Start the bare endpoint and the app, measure each piece, and print the cost per open log."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=200, help="idle streams held open at once")
    parser.add_argument("--seconds", type=float, default=60, help="how long they are held")
    parser.add_argument("--requests", type=int, default=2000, help="requests per per-request figure")
    parser.add_argument("--small", action="store_true", help="CI: 10 streams for 3 s, 100 requests")
    args = parser.parse_args()
    if args.small:
        args.streams, args.seconds, args.requests = 10, 3, 100
    processes = common.Processes()
    database = common.psycopg_url(common.fresh_database("push"))
    # One signed-in user stands in for many open logs: the per-user and per-process caps of open
    # streams (a defence, tests/test_stream_caps.py) would refuse most of them.
    uncapped = {"LOG_STREAMS_PER_USER": "100000", "LOG_STREAMS_PER_PROCESS": "100000"}
    env = common.app_env(database, processes.redis(), processes.folder, **uncapped)
    app = common.make_app(env)
    common.migrate(app)
    from webapp.services import demo

    with app.app_context():
        demo.seed(common.PASSWORD)
        lifetime = app.config["LOG_STREAM_SECONDS"]
        stream_poll = app.config["LOG_POLL_STREAM_SECONDS"]
        fast, slow = app.config["LOG_POLL_FAST_SECONDS"], app.config["LOG_POLL_SLOW_SECONDS"]
    settings = common.GEVENT_ARGS
    bare = processes.gunicorn("bare_app:app", {"PYTHONPATH": str(HERE)}, ["--chdir", str(HERE)], settings)
    bare_pid = processes.children[-1].pid
    web = processes.gunicorn("wsgi:app", env, settings=settings)
    web_pid = processes.children[-1].pid
    # Streams that end after 1 s (to count a whole stream).
    other = processes.gunicorn("wsgi:app", {**env, "LOG_STREAM_SECONDS": "1"}, [], settings)
    other_pid = processes.children[-1].pid

    client = common.sign_in(web, "clinician@example.com")
    page = client.get("/clients/1").text
    log_url = re.search(r'id="email-log"[^>]*hx-get="([^"]+)"', page, re.S).group(1).replace("&amp;", "&")
    stream_path = re.search(r'data-stream-url="([^"]+)"', page).group(1)
    headers = {**common.browser_headers(client), "HX-Trigger": "email-log"}
    expired = re.sub(r"v=(\w+)-\d+", r"v=\1-1", log_url)  # the "unchanged" answer ran out: full render
    n = args.requests
    print(f"gunicorn {' '.join(settings)}; load average {' '.join(f'{x:.2f}' for x in psutil.getloadavg())}")
    print("server CPU per piece:")
    unit = measure(
        "baseline: a bare Flask endpoint (one request)",
        lambda: cpu_per_request(bare_pid, bare + "/", {}, n, 204),
    )
    fast_poll = measure(
        "unchanged poll, fast path (204)", lambda: cpu_per_request(web_pid, web + log_url, headers, n, 204)
    )
    full = measure(
        "full render of the log (when the unchanged answer ran out)",
        lambda: cpu_per_request(web_pid, web + expired, headers, max(20, n // 10), 200),
    )
    other_port = int(other.rsplit(":", 1)[1])

    def whole_stream() -> float:
        count = max(10, n // 10)
        before = cpu_seconds(other_pid)
        for start in range(0, count, 50):
            socks = [open_stream(other_port, stream_path, headers) for _ in range(min(50, count - start))]
            for sock in socks:
                read_to_end(sock)
        return (cpu_seconds(other_pid) - before) / count

    connect = measure("opening a stream (and its end)", whole_stream)
    web_port = int(web.rsplit(":", 1)[1])

    def idle_minute() -> float:
        socks = [open_stream(web_port, stream_path, headers) for _ in range(args.streams)]
        before = cpu_seconds(web_pid)
        time.sleep(args.seconds)
        spent = cpu_seconds(web_pid) - before
        for sock in socks:
            sock.close()
        return spent / args.streams * 60 / args.seconds

    idle = measure(f"an idle open stream for a minute ({args.streams} open at once)", idle_minute)

    per_minute = 60
    reconnects = per_minute / lifetime
    costs = {
        f"polling now, settled ({slow} s fast-path polls)": (per_minute / slow - 1) * fast_poll + full,
        f"polling now, in flight ({fast} s fast-path polls)": (per_minute / fast - 1) * fast_poll + full,
        PUSH: per_minute / stream_poll * full + idle + reconnects * (connect + fast_poll),
    }
    print(
        "one open log per minute, in bare-request units of server CPU "
        f"(stream lifetime {lifetime} s, a poll every {stream_poll} s while it is open):"
    )
    for label, cost in costs.items():
        print(f"  {label:62} {cost / unit:8.1f}")
    push = costs[PUSH] / unit
    polling = costs[f"polling now, settled ({slow} s fast-path polls)"] / unit
    print(f"push vs polling (settled, the fallback): {push:.1f} vs {polling:.1f} bare requests a minute")


if __name__ == "__main__":
    main()
