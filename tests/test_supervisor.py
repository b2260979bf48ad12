"""The supervisor of `flask up` (webapp/supervisor.py), with real processes: a child that dies is
started again (with backoff), Ctrl-C stops every child's process group whole (a leader that
ignores SIGTERM, what its group started, a straggler that outlives its leader), and children go
when the supervisor is killed outright. Nothing is left: no process names the test's folder.

The children are small scripts in the test's folder; waits are bounded polls of wall time.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from tests.faults import Processes, wait_for
from webapp import supervisor

# A stop deadline short enough that a child ignoring SIGTERM is killed within the test's patience.
STOP_SECONDS = 2.0
# The supervisor in a process of its own (it takes over SIGINT and SIGTERM).
DRIVER = f"""
import json, os, sys
from webapp import supervisor
from webapp.run_output import Terminal
supervisor.STOP_SECONDS = {STOP_SECONDS}
commands = json.loads(sys.argv[1])
# Nothing answers at this address: the terminal only says, in a minute, that nothing did.
supervisor.supervise(commands, dict(os.environ), "http://127.0.0.1:9", Terminal(sys.argv[2], verbose=True))
print("supervisor: all stopped", flush=True)
"""
# A child: notes its pid, then runs until stopped. "stubborn" ignores SIGTERM and SIGINT;
# "lingering" takes half a second to go (a gunicorn worker finishing an answer); "family" starts
# one of each in its own process group (not children of the supervisor) and goes at once.
CHILD = """
import os, signal, subprocess, sys, time
name, mode = sys.argv[1], sys.argv[2]
if mode == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
if mode == "lingering":
    signal.signal(signal.SIGTERM, lambda *_: (time.sleep(0.5), sys.exit(0)))
if mode == "family":
    for kind in ("lingering", "stubborn"):
        subprocess.Popen([sys.executable, sys.argv[0], f"{name}-{kind}", kind])
with open(os.path.join(os.path.dirname(sys.argv[0]), name + ".pids"), "a") as pids:
    pids.write(f"{os.getpid()}\\n")
while True:
    time.sleep(0.1)
"""


@pytest.fixture
def processes(tmp_path):
    """Processes the test starts; stopped and checked afterwards."""
    started = Processes(tmp_path)
    yield started
    assert started.stop() == [], "a process outlived its process group"


def child(folder: Path, name: str, mode: str = "plain") -> list[str]:
    script = folder / "child.py"
    script.write_text(CHILD)
    return [sys.executable, str(script), name, mode]


def start_supervisor(processes: Processes, folder: Path, commands: dict[str, list[str]]) -> subprocess.Popen:
    arguments = [json.dumps(commands), str(folder)]
    return processes.start("supervisor", [sys.executable, "-c", DRIVER, *arguments], dict(os.environ))


def pids(folder: Path, name: str) -> list[int]:
    path = folder / f"{name}.pids"
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def left_running(folder: Path) -> list[str]:
    """The command lines of the running processes (this one aside) that name the folder."""
    left = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        with contextlib.suppress(psutil.Error):
            command = " ".join(proc.info["cmdline"] or ())
            if (
                proc.pid != os.getpid()
                and proc.info["status"] != psutil.STATUS_ZOMBIE
                and str(folder) in command
            ):
                left.append(command)
    return left


def test_a_child_that_dies_is_started_again_in_a_group_of_its_own(processes, tmp_path):
    up = start_supervisor(processes, tmp_path, {"a": child(tmp_path, "a")})
    (first,) = wait_for(lambda: pids(tmp_path, "a"), 30, what="the child")
    assert os.getpgid(first) == first != os.getpgid(up.pid)

    os.kill(first, signal.SIGKILL)
    (_, second) = wait_for(lambda: pids(tmp_path, "a")[1:] and pids(tmp_path, "a"), 10, what="a restart")
    assert "a stopped unexpectedly (exit -9); restarting it in 1 s." in processes.log(up)
    os.kill(second, signal.SIGKILL)  # dead again soon after its start: it waits longer
    wait_for(lambda: len(pids(tmp_path, "a")) == 3, 10, what="a second restart")
    assert "a stopped unexpectedly (exit -9); restarting it in 2 s." in processes.log(up)

    os.kill(up.pid, signal.SIGTERM)
    assert up.wait(timeout=10) == 0
    assert left_running(tmp_path) == []


def test_ctrl_c_stops_every_group_whole(processes, tmp_path):
    commands = {
        "plain": child(tmp_path, "plain"),
        "stubborn": child(tmp_path, "stubborn", "stubborn"),
        "family": child(tmp_path, "family", "family"),
    }
    up = start_supervisor(processes, tmp_path, commands)
    for name in ("plain", "stubborn", "family", "family-lingering", "family-stubborn"):
        wait_for(lambda name=name: pids(tmp_path, name), 30, what=name)

    os.killpg(up.pid, signal.SIGINT)  # Ctrl-C: the terminal signals the supervisor's group alone

    assert up.wait(timeout=STOP_SECONDS + supervisor.GROUP_STOP_SECONDS + 5) == 0
    assert "supervisor: all stopped" in processes.log(up)
    assert left_running(tmp_path) == []


def test_the_children_go_when_the_supervisor_is_killed_outright(processes, tmp_path):
    up = start_supervisor(processes, tmp_path, {"a": child(tmp_path, "a"), "b": child(tmp_path, "b")})
    wait_for(lambda: pids(tmp_path, "a") and pids(tmp_path, "b"), 30, what="the children")

    up.kill()  # no word to its children: Linux tells them (PR_SET_PDEATHSIG)
    up.wait()

    wait_for(lambda: left_running(tmp_path) == [], 10, what="the children to go")
