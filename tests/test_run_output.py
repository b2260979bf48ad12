"""What `flask up` says in its terminal: a few lines once the product answers; the rest in the run log.
(tests/test_smoke.py runs bin/run itself and reads both.)"""

from __future__ import annotations

import logging
import sys
import threading

from flask.testing import FlaskCliRunner
from werkzeug.serving import make_server
from werkzeug.wrappers import Response

from tests.product import free_port
from webapp import run_output
from webapp.run_output import Terminal


def test_up_help_names_verbose_and_the_run_log(make_app):
    result = FlaskCliRunner(make_app()).invoke(args=["up", "--help"])
    assert result.exit_code == 0
    words = " ".join(result.output.split())
    assert "--verbose" in words and "instance/run.log" in words


def test_the_lines_a_person_needs_are_said_together_once_the_server_answers(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(run_output, "CHECK_SECONDS", 0.0)  # look again at once
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    terminal = Terminal(str(tmp_path), verbose=False)
    terminal.note("Demo users: a@example.com; password: secret (shown only now)")
    terminal.check(url)
    assert capsys.readouterr().out == ""  # nothing answers yet

    server = make_server("127.0.0.1", port, lambda environ, start: Response("ok")(environ, start))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        terminal.check(url)
        terminal.check(url)
    finally:
        server.shutdown()
        server.server_close()
    assert capsys.readouterr().out.splitlines() == [
        f"Clinic email log is up at {url}",
        "  Demo users: a@example.com; password: secret (shown only now)",
        f"  Every request and job is logged to {tmp_path / 'run.log'} (--verbose shows them here).",
        "  Ctrl-C stops web, worker and scheduler.",
    ]


def test_a_server_that_never_answers_still_gets_the_lines_said(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(run_output, "UP_WAIT_SECONDS", 0.0)
    terminal = Terminal(str(tmp_path), verbose=False)
    terminal.note("Demo users: a@example.com; password: secret (shown only now)")
    url = f"http://127.0.0.1:{free_port()}"
    terminal.check(url)
    out = capsys.readouterr().out
    assert out.startswith(f"The web server has not answered at {url} yet: see {tmp_path / 'run.log'}")
    assert "password: secret" in out
    terminal.stopped()
    assert capsys.readouterr().out == ""  # said once


def test_stopped_before_answering_still_says_the_password(tmp_path, capsys):
    terminal = Terminal(str(tmp_path), verbose=True)
    terminal.note("Demo users: a@example.com; password: secret (shown only now)")
    terminal.stopped()
    assert capsys.readouterr().out == "Demo users: a@example.com; password: secret (shown only now)\n"
    assert not (tmp_path / "run.log").exists()  # verbose: everything is in the terminal


def test_each_run_starts_a_new_log_and_keeps_the_last_one(tmp_path):
    first = Terminal(str(tmp_path), verbose=False)
    first.log.write("first run\n")
    second = Terminal(str(tmp_path), verbose=False)
    second.log.write("second run\n")
    second.log.flush()
    assert (tmp_path / "run.log.1").read_text() == "first run\n"
    assert (tmp_path / "run.log").read_text() == "second run\n"


def test_the_migrations_lines_go_to_the_log_and_the_supervisor_keeps_its_voice(tmp_path, capsys):
    terminal = Terminal(str(tmp_path), verbose=False)
    root = logging.getLogger()
    with terminal.quiet():
        # As Alembic's logging setup does, inside the migrations.
        handler = logging.StreamHandler(sys.stderr)
        root.addHandler(handler)
        logging.getLogger("alembic.test").warning("Running upgrade 0001 -> 0002")
    try:
        logging.getLogger("webapp.test").warning("the supervisor speaks")
    finally:
        root.removeHandler(handler)
    terminal.log.flush()
    assert "Running upgrade 0001 -> 0002" in (tmp_path / "run.log").read_text()
    assert "the supervisor speaks" not in (tmp_path / "run.log").read_text()
    assert handler.stream is sys.stderr
    assert "Running upgrade" not in capsys.readouterr().err
