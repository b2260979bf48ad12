"""Benchmark the email log's refresh path: requests per second of the "nothing changed" answer
(204 from Redis alone) against, in the same run, a path that makes one SQL query and the full
render of the log. Prints the numbers; it asserts nothing.

    .venv/bin/python benchmarks/log_poll.py [--requests 2000]
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flask_migrate import upgrade  # noqa: E402

from webapp import create_app  # noqa: E402
from webapp.services import demo  # noqa: E402


def measure(client, path: str, headers: dict[str, str], count: int) -> tuple[float, int]:
    """Return requests per second for `count` GETs of path, and the status code seen."""
    status = client.get(path, headers=headers).status_code
    started = time.perf_counter()
    for _ in range(count):
        client.get(path, headers=headers)
    return count / (time.perf_counter() - started), status


def main() -> None:
    """Run the three measurements on a demo database and print them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-"))
    app = create_app({"INSTANCE_PATH": str(folder), "WTF_CSRF_ENABLED": False, "RATELIMIT_ENABLED": False})
    with app.app_context():
        upgrade(directory=app.extensions["migrate"].directory)
        demo.seed("benchmark-password")
    client = app.test_client()
    client.post("/login", data={"email": "clinician@example.com", "password": "benchmark-password"})
    page = client.get("/clients/1").get_data(as_text=True)
    log_url = re.search(r'id="email-log"[^>]*hx-get="([^"]+)"', page, re.S).group(1).replace("&amp;", "&")
    poll = {"HX-Request": "true", "HX-Trigger": "email-log"}
    rows = [
        ("unchanged log (204, Redis only)", log_url, poll),
        ("baseline: /healthz (one SQL query + Redis ping)", "/healthz", {}),
        ("full log render (database + template)", "/clients/1/emails", poll),
    ]
    print(f"{'path':52} {'req/s':>10}  status")
    results = []
    for label, path, headers in rows:
        rate, status = measure(client, path, headers, args.requests)
        results.append(rate)
        print(f"{label:52} {rate:10.0f}  {status}")
    print(f"unchanged log vs one-query baseline: {results[0] / results[1]:.2f}x")
    print(f"unchanged log vs full render:        {results[0] / results[2]:.2f}x")


if __name__ == "__main__":
    main()
