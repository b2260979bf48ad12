"""Every benchmark runs once at its small size, so none of them rots. Nothing here times anything:
the figures are printed by the benchmarks, and only that they run and print them is checked."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.helpers import ON_POSTGRES, OWNER_DATABASE_URL

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
# benchmark -> a line its output must contain (its headline figure), longest first at --small
# (measured alone: 39, 27, 25, 24, 23, 17, 16, 12, 11 and 6 s), the order they are started in:
# the short ones fill in at the end, where a long one started last ran on alone (150 -> 120 s).
EXPECTED = {
    "log_push.py": "push vs polling (settled, the fallback)",
    "scale_out.py": "final states equal: yes",
    "freshness.py": "change stored -> shown",
    "log_partial.py": "full email log partial",
    "log_poll.py": "unchanged poll vs bare endpoint:",
    "ingest.py": "end to end: HTTP -> gunicorn",
    "poller.py": "large / small:",
    "search.py": "client search",
    "sending.py": "sending reminders",
    "owner_overview.py": "aggregate query (60 days by day and status)",
}

pytestmark = [
    # Each starts its own Redis servers and web servers: one after another with the other tests
    # that start processes (docs/testing.md, "Parallel runs").
    pytest.mark.xdist_group("processes"),
    # They make their own PostgreSQL databases and Redis servers: once per CI run is enough.
    pytest.mark.skipif(not ON_POSTGRES, reason="the benchmarks run on PostgreSQL"),
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="the benchmarks start their own Redis"),
]


def test_every_benchmark_is_listed():
    scripts = {path.name for path in BENCHMARKS.glob("*.py")}
    helpers = {"common.py", "bare_app.py", "loadgen.py", "sandbox_app.py", "bench_jobs.py"}
    assert scripts - helpers == set(EXPECTED)


def test_every_benchmark_runs_at_its_small_size_and_prints_its_figures():
    """Three at a time, longest first: each mostly waits for its processes to start (CI time, not
    a measurement); four at a time took longer on two cores."""
    server = sa.engine.make_url(OWNER_DATABASE_URL).set(database="postgres")
    env = {**os.environ, "BENCH_DATABASE_URL": server.render_as_string(hide_password=False)}
    for name in ("DATABASE_URL", "MIGRATION_DATABASE_URL", "REDIS_URL"):
        env.pop(name, None)

    def run(script: str) -> tuple[str, subprocess.CompletedProcess]:
        command = [sys.executable, str(BENCHMARKS / script), "--small"]
        return script, subprocess.run(
            command, capture_output=True, text=True, env=env, timeout=240, cwd=BENCHMARKS.parent
        )

    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(run, EXPECTED))
    for script, result in results:
        assert result.returncode == 0, script + result.stdout[-3000:] + result.stderr[-3000:]
        assert EXPECTED[script] in result.stdout, script + result.stdout[-3000:]
