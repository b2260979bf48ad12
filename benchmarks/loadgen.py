"""A small HTTP load generator, run as its own process: keep-alive GETs from several threads for a
fixed time; prints requests per second and the status codes seen. Used when `wrk` is not installed.

    .venv/bin/python benchmarks/loadgen.py URL --seconds 5 --connections 16 [-H 'Name: value' ...]
"""

from __future__ import annotations

import argparse
import collections
import http.client
import threading
import time
from urllib.parse import urlsplit


def main() -> None:
    """Hammer one URL and print `requests/s <n> codes <dict>`."""
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("-H", dest="headers", action="append", default=[])
    args = parser.parse_args()
    parts = urlsplit(args.url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    headers = dict(header.split(": ", 1) for header in args.headers)
    codes: collections.Counter[int] = collections.Counter()
    lock = threading.Lock()
    stop = time.monotonic() + args.seconds

    def run() -> None:
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        seen: collections.Counter[int] = collections.Counter()
        while time.monotonic() < stop:
            connection.request("GET", path, headers=headers)
            response = connection.getresponse()
            response.read()
            seen[response.status] += 1
        with lock:
            codes.update(seen)

    started = time.monotonic()
    threads = [threading.Thread(target=run) for _ in range(args.connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(f"requests/s {sum(codes.values()) / (time.monotonic() - started):.1f} codes {dict(codes)}")


if __name__ == "__main__":
    main()
