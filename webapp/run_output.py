"""What `flask up` (bin/run) shows in its terminal.

A person starting the product needs a few lines: where it is, who can sign in and with what
password, where the details go and how to stop it. Those are said together once the web server
answers. The routine lines of the children (every job the worker runs, every request gunicorn
serves, the migrations) go to a log file under the instance folder, unless asked for (--verbose).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import click
import httpx

RUN_LOG = "run.log"
# Said anyway, with a pointer to the log, if the web server has not answered by then.
UP_WAIT_SECONDS = 60.0
CHECK_SECONDS = 0.5


class Terminal:
    """The supervisor's terminal: the lines a person needs, said once the product is up; the
    children's output in the run log (or here, when verbose)."""

    def __init__(self, instance_path: str, *, verbose: bool) -> None:
        self.verbose = verbose
        self.log_path = Path(instance_path) / RUN_LOG
        self.log: IO[str] | None = None if verbose else _fresh_log(self.log_path)
        self.notes: list[str] = []
        self.said = False
        self._started = time.monotonic()
        self._next_check = 0.0
        # One client for every look: httpx.get builds a TLS context each call (about 50 ms of
        # CPU), taken from the web server, worker and scheduler starting meanwhile.
        self._probe: httpx.Client | None = None

    @property
    def log_name(self) -> str:
        """The run log's path as a person types it from here (relative when below this folder)."""
        relative = os.path.relpath(self.log_path)
        return self.log_path.as_posix() if relative.startswith("..") else relative

    def children_output(self) -> IO[str] | None:
        """Where the children write: the run log, or (verbose) this terminal."""
        return self.log

    @contextlib.contextmanager
    def quiet(self) -> Iterator[None]:
        """Send what is written to stderr meanwhile (the migrations' lines) to the run log."""
        if self.log is None:
            yield
            return
        root = logging.getLogger()
        before = set(root.handlers)
        with contextlib.redirect_stderr(self.log):
            yield
        # A handler made meanwhile (the migrations' logging setup) would write to the run log from
        # now on: what the supervisor itself has to say belongs in the terminal.
        for handler in set(root.handlers) - before:
            if isinstance(handler, logging.StreamHandler) and handler.stream is self.log:
                handler.setStream(sys.stderr)

    def note(self, line: str) -> None:
        """Keep a line a person needs, to say with the others once the product is up."""
        self.notes.append(line)

    def starting(self, url: str) -> None:
        """Say at once that the product is starting, and where its details go."""
        where = "here" if self.verbose else f"to {self.log_name}"
        click.echo(f"Starting the clinic email log at {url} (the details go {where})…")

    def check(self, url: str) -> None:
        """Once the web server answers (or has not in UP_WAIT_SECONDS), say what a person needs."""
        now = time.monotonic()
        if self.said or now < self._next_check:
            return
        self._next_check = now + CHECK_SECONDS
        if self._probe is None:
            self._probe = httpx.Client(timeout=1.0)
        if _answers(self._probe, url):
            self.say(f"Clinic email log is up at {url}")
        elif now - self._started > UP_WAIT_SECONDS:
            self.say(f"The web server has not answered at {url} yet: see {self.log_name}")

    def say(self, headline: str) -> None:
        """Say the headline and every noted line, once."""
        self.said = True
        if self._probe is not None:
            self._probe.close()
        lines = [headline, *self.notes]
        if not self.verbose:
            lines.append(f"Every request and job is logged to {self.log_name} (--verbose shows them here).")
        lines.append("Ctrl-C stops web, worker and scheduler.")
        click.echo("\n".join([lines[0], *(f"  {line}" for line in lines[1:])]))

    def stopped(self) -> None:
        """Stopped before the web server answered: still say the noted lines (a new password)."""
        if not self.said and self.notes:
            self.said = True
            click.echo("\n".join(self.notes))

    def see_log(self) -> str:
        """Words pointing at the children's output, for a line about one of them."""
        return "" if self.verbose else f" (its output is in {self.log_name})"


def _fresh_log(path: Path) -> IO[str]:
    """Open a new run log, keeping the previous run's as run.log.1."""
    if path.exists():
        path.replace(path.with_name(path.name + ".1"))
    return open(path, "a", buffering=1)  # noqa: SIM115 - open for the whole run, which closes it


def _answers(http: httpx.Client, url: str) -> bool:
    """Whether the web server answers at all (any status: it is up)."""
    try:
        http.get(f"{url}/healthz")
    except httpx.HTTPError:
        return False
    return True
