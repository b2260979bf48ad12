"""Keep a few child processes running, and stop every one of them whole (what `flask up` does
with the web server, the worker and the scheduler).

Each child runs in its own process group: Ctrl-C (SIGINT) and SIGTERM reach only the supervisor,
which stops each group as a whole (a gunicorn worker with its master, a job's child with its RQ
worker), so none is left holding the port. A child that dies is started again, with backoff so
one that cannot start does not spin. Should the supervisor itself die without a word (SIGKILL),
Linux sends each child SIGTERM (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from webapp.run_output import Terminal

ROOT = Path(__file__).resolve().parents[1]
# A child that died is restarted after 1 s, doubling while it keeps dying young.
RESTART_MAX_SECONDS = 30.0
RESTART_RESET_SECONDS = 60.0
# Asked to stop, the children get this long before they are killed.
STOP_SECONDS = 15.0
# Then what is left of a group whose leader exited gets this long.
GROUP_STOP_SECONDS = 3.0
LOOK_SECONDS = 0.2


def supervise(commands: dict[str, list[str]], env: dict[str, str], url: str, terminal: Terminal) -> None:
    """Start the commands (run from the project's folder) and keep them running: restart one that
    dies; stop them all, each group whole, once SIGINT or SIGTERM comes."""
    stopping = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    def start(name: str) -> subprocess.Popen:
        return subprocess.Popen(
            commands[name],
            env=env,
            cwd=ROOT,
            process_group=0,
            stdout=terminal.children_output(),
            stderr=subprocess.STDOUT if terminal.children_output() else None,
            preexec_fn=die_with_parent,  # noqa: PLW1509 - only prctl, before exec
        )

    processes = {name: start(name) for name in commands}
    started_at = {name: time.monotonic() for name in commands}
    delays = dict.fromkeys(commands, 0.0)
    restart_at: dict[str, float] = {}
    while not stopping:
        terminal.check(url)
        now = time.monotonic()
        for name, process in processes.items():
            if name in restart_at:
                if now >= restart_at[name]:
                    del restart_at[name]
                    processes[name] = start(name)
                    started_at[name] = now
                continue
            if process.poll() is None:
                continue
            # Back off only while it keeps dying soon after each start.
            ran_long = now - started_at[name] > RESTART_RESET_SECONDS
            delays[name] = 1.0 if ran_long or not delays[name] else min(delays[name] * 2, RESTART_MAX_SECONDS)
            click.echo(
                f"{name} stopped unexpectedly (exit {process.returncode}){terminal.see_log()}; "
                f"restarting it in {delays[name]:.0f} s."
            )
            restart_at[name] = now + delays[name]
        time.sleep(LOOK_SECONDS)
    # A child waiting to be restarted is gone, but what it started may live on in its group.
    stop_groups(list(processes.values()))


def stop_groups(running: list[subprocess.Popen]) -> None:
    """Stop each child's whole process group: politely, then not; wait until each group is empty."""
    for process in running:
        if process.poll() is None or _group_alive(process.pid):
            _signal_group(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_SECONDS
    for process in running:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal_group(process.pid, signal.SIGKILL)
            process.wait()
    # A leader can exit before its group does (gunicorn's master before a worker that still
    # holds the port): wait for the rest, then kill what is left.
    for process in running:
        group_deadline = time.monotonic() + GROUP_STOP_SECONDS
        while _group_alive(process.pid) and time.monotonic() < group_deadline:
            time.sleep(0.1)
        if _group_alive(process.pid):
            _signal_group(process.pid, signal.SIGKILL)


def die_with_parent() -> None:
    """In a child, before exec: ask Linux for SIGTERM when the parent dies, however it dies."""
    with contextlib.suppress(Exception):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _signal_group(group: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, sig)


def _group_alive(group: int) -> bool:
    """Return whether any process of the group still exists."""
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
