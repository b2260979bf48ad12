"""Running the product as the README does (`bin/run` on its embedded defaults), for the smoke and
browser tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]


PASSWORD = "smoke-test-password"


# The product starts on its embedded defaults, whatever database the test run itself uses.
DATABASE_SETTINGS = ("DATABASE_URL", "MIGRATION_DATABASE_URL", "REDIS_URL")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_product(instance: Path, port: int, *options: str, **settings: str) -> subprocess.Popen:
    """Start `bin/run` on the embedded defaults, with any options, and extra settings in its environment."""
    env = {key: value for key, value in os.environ.items() if key not in DATABASE_SETTINGS}
    env.update(INSTANCE_PATH=str(instance), DEMO_PASSWORD=PASSWORD, PYTHONUNBUFFERED="1", **settings)
    return subprocess.Popen(
        [str(ROOT / "bin" / "run"), "--port", str(port), *options],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, as a terminal gives it
    )


def wait_until_healthy(base: str, process: subprocess.Popen) -> None:
    deadline = time.time() + 90
    # One client for every probe: httpx.get builds a TLS context each call (about 50 ms of CPU),
    # taken from the product it waits for while that starts.
    with httpx.Client(timeout=2) as http:
        while time.time() < deadline:
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            try:
                if http.get(f"{base}/healthz").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)  # a real subprocess coming up: a bounded poll
    raise AssertionError("the product did not become healthy in time")


def read_until(process: subprocess.Popen, text: str, seconds: float = 90) -> str:
    """Read the product's terminal until a line holds `text`; return what was read (bounded)."""
    lines: list[str] = []

    def read() -> None:
        for line in process.stdout:
            lines.append(line)
            if text in line:
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(seconds)
    assert not reader.is_alive(), f"the terminal never said {text!r}: {''.join(lines)[-2000:]}"
    return "".join(lines)


def press_ctrl_c(process: subprocess.Popen) -> list[psutil.Process]:
    """Send SIGINT to the process group, as Ctrl-C does; return the processes that were running."""
    family = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
    os.killpg(process.pid, signal.SIGINT)
    process.wait(timeout=30)
    return family
