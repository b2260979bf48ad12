"""The product as the README runs it: `bin/run` on the embedded defaults, driven over HTTP."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.product import (
    DATABASE_SETTINGS,
    PASSWORD,
    ROOT,
    free_port,
    press_ctrl_c,
    read_until,
    start_product,
    wait_until_healthy,
)

pytestmark = pytest.mark.embedded


def product_processes(instance: Path) -> list[psutil.Process]:
    """Every live process started for this product instance, wherever its process group went:
    each carries its INSTANCE_PATH, names the instance folder on its command line, or works in
    it (a redis-server rewrites its environment with its process title and works in its data
    folder, even daemonised)."""
    found = []
    for proc in psutil.process_iter(["status", "cmdline"]):
        if proc.pid == os.getpid() or proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        try:
            if (
                str(instance) in " ".join(proc.info["cmdline"] or ())
                or proc.cwd().startswith(str(instance))
                or proc.environ().get("INSTANCE_PATH") == str(instance)
            ):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def assert_all_gone_after_ctrl_c(instance: Path, port: int) -> None:
    """Nothing started from the checkout for this instance is left 10 s after Ctrl-C."""
    deadline = time.time() + 10
    while (product_processes(instance) or not port_is_free(port)) and time.time() < deadline:
        time.sleep(0.2)  # real processes exiting: a bounded poll
    left = [f"{proc.pid} {' '.join(proc.cmdline())[:100]}" for proc in product_processes(instance)]
    assert left == [], left
    assert port_is_free(port), f"port {port} is still held"


def csrf_token(html: str) -> str:
    match = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html) or re.search(
        r'value="([^"]+)"[^>]*name="csrf_token"', html
    )
    assert match, "no CSRF token on the page"
    return match.group(1)


def sign_in(http: httpx.Client) -> None:
    token = csrf_token(http.get("/login").text)
    response = http.post(
        "/login", data={"email": "clinician@example.com", "password": PASSWORD, "csrf_token": token}
    )
    assert response.status_code == 302, response.text[:300]


def test_run_command_sends_an_email_to_delivered_and_stops_cleanly(tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = start_product(tmp_path, port)
    try:
        wait_until_healthy(base, process)
        names = " ".join(" ".join(proc.cmdline()) for proc in product_processes(tmp_path))
        for part in ("redis-server", "gunicorn", "wsgi worker", "wsgi scheduler"):
            assert part in names, f"{part} not found among the product's processes"
        with httpx.Client(base_url=base, timeout=10) as http:
            sign_in(http)
            client_page = http.get("/clients?q=jane.doe")
            client_path = re.search(r'href="(/clients/\d+)"', client_page.text).group(1)
            page = http.get(client_path)
            assert "jane.doe+delivered@example.com" in page.text
            response = http.post(
                f"{client_path}/emails",
                data={
                    "kind": "free_text",
                    "subject": "Smoke test reminder",
                    "body": "Hello from the smoke test",
                    "csrf_token": csrf_token(page.text),
                },
            )
            assert response.status_code == 303
            deadline = time.time() + 60
            status = ""
            while time.time() < deadline:
                log = http.get(f"{client_path}/emails", headers={"HX-Request": "true"}).text
                row = log[log.index("Smoke test reminder") :]
                status = re.search(r'class="badge badge-\w+"[^>]*>([^<]+)<', row).group(1)
                if status == "Delivered":
                    break
                time.sleep(0.5)  # the real product (its own clock) moves the email on: a bounded poll
            assert status == "Delivered"
    finally:
        family = press_ctrl_c(process)
    output = process.stdout.read() if process.stdout else ""
    assert process.returncode == 0, output[-2000:]
    assert_short_and_to_the_point(output, base, tmp_path)
    assert f"password: {PASSWORD}" in output
    time.sleep(0.5)  # real children reaped by the kernel after their parent exits
    still_running = [proc for proc in family if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE]
    assert still_running == [], still_running
    # The embedded Redis server and every gunicorn worker too, though not children of bin/run.
    assert_all_gone_after_ctrl_c(tmp_path, port)

    # Starting again keeps the data (and the queue's Redis data), and says where the password is.
    process = start_product(tmp_path, port)
    try:
        wait_until_healthy(base, process)
        with httpx.Client(base_url=base, timeout=10) as http:
            sign_in(http)
            assert "Smoke test reminder" in http.get(client_path).text
    finally:
        press_ctrl_c(process)
    output = process.stdout.read() if process.stdout else ""
    assert process.returncode == 0, output[-2000:]
    assert "their password is the one printed when the demo data was first created" in output
    assert "flask --app wsgi seed-demo --password NEW" in output
    assert_short_and_to_the_point(output, base, tmp_path)
    assert '"POST /clients/' in (tmp_path / "run.log.1").read_text()  # the first run's log, kept
    assert_all_gone_after_ctrl_c(tmp_path, port)


def assert_short_and_to_the_point(output: str, base: str, instance: Path) -> None:
    """The terminal says what a person needs, in a few lines; every job and request is in the log."""
    lines = output.splitlines()
    assert len(lines) <= 8, output
    up = next(n for n, line in enumerate(lines) if line == f"Clinic email log is up at {base}")
    told = "\n".join(lines[up:])  # said together, once the web server answers
    assert "Demo users: clinician@example.com, owner@example.com, support@example.com" in told
    assert f"Every request and job is logged to {instance / 'run.log'}" in told
    assert "Ctrl-C stops web, worker and scheduler." in told
    assert lines[-1] == "Stopped."
    log = (instance / "run.log").read_text()
    assert "Job OK" in log and '"GET /healthz HTTP/1.1" 200' in log and "Booting worker" in log
    assert "Job OK" not in output and "GET /healthz" not in output


def test_verbose_shows_every_line_in_the_terminal(tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = start_product(tmp_path, port, "--verbose")
    try:
        wait_until_healthy(base, process)
        httpx.get(f"{base}/login", timeout=10)
        # The supervisor says "up" at its next look at the server, which may come after ours.
        seen = read_until(process, f"Clinic email log is up at {base}")
    finally:
        press_ctrl_c(process)
    output = seen + (process.stdout.read() if process.stdout else "")
    assert process.returncode == 0, output[-2000:]
    assert f"Clinic email log is up at {base}" in output and f"password: {PASSWORD}" in output
    assert "Running upgrade" in output and "Booting worker" in output
    assert '"GET /login HTTP/1.1" 200' in output
    assert not (tmp_path / "run.log").exists()
    assert_all_gone_after_ctrl_c(tmp_path, port)


def test_ctrl_c_stops_everything_every_time(tmp_path):
    """Several starts and stops in a row: each Ctrl-C leaves no process and a free port."""
    port = free_port()
    for _ in range(3):
        process = start_product(tmp_path, port)
        try:
            wait_until_healthy(f"http://127.0.0.1:{port}", process)
            # A page load keeps gunicorn's workers busy while they are told to stop.
            httpx.get(f"http://127.0.0.1:{port}/login", timeout=10)
        finally:
            press_ctrl_c(process)
        assert process.returncode == 0
        assert_all_gone_after_ctrl_c(tmp_path, port)


def test_bad_settings_stop_start_up_with_one_clear_line(tmp_path):
    cases = {
        "DATABASE_URL": ("postgresql://nobody@127.0.0.1:9/none", "cannot reach the database"),
        "REDIS_URL": ("redis://127.0.0.1:9/0", "cannot reach Redis"),
        "EMAIL_PROVIDER": ("carrier-pigeon", "EMAIL_PROVIDER='carrier-pigeon' is not known"),
    }
    for name, (value, expected) in cases.items():
        env = {key: val for key, val in os.environ.items() if key not in DATABASE_SETTINGS}
        env.update(INSTANCE_PATH=str(tmp_path / name), **{name: value})
        result = subprocess.run(
            [str(ROOT / ".venv" / "bin" / "flask"), "--app", "wsgi", "init-db"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode != 0
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("error: ") and expected in lines[0], lines[0]
