"""The sandbox as its own package: a registry of wire formats, imported and scheduled only when
a sandbox is configured, and the setting that picks its wire format."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from rq.cron import CronScheduler

from config import ConfigError, load_settings
from webapp.sandbox import WIRE_FORMATS, simulator_class
from webapp.sandbox.base import Simulator
from webapp.sandbox.sendgrid import SendGridSandbox

ROOT = Path(__file__).resolve().parents[1]


def test_each_registered_wire_format_names_a_simulator():
    assert {"sendgrid", "postmark"} <= set(WIRE_FORMATS)
    for name in WIRE_FORMATS:
        simulator = simulator_class(name)
        assert issubclass(simulator, Simulator) and simulator.wire_format == name
    assert simulator_class("sendgrid") is SendGridSandbox
    with pytest.raises(ValueError, match="no 'mailgun' wire format"):
        simulator_class("mailgun")


def test_the_sandbox_wire_format_setting_is_checked(tmp_path, monkeypatch):
    monkeypatch.delenv("SANDBOX_WIRE_FORMAT", raising=False)
    monkeypatch.delenv("EMAIL_PROVIDER", raising=False)
    assert load_settings(str(tmp_path), {})["SANDBOX_WIRE_FORMAT"] == "sendgrid"
    with pytest.raises(ConfigError, match="SANDBOX_WIRE_FORMAT='mailgun' is not known"):
        load_settings(str(tmp_path), {"SANDBOX_WIRE_FORMAT": "mailgun"})


def test_the_sandbox_plays_postmark_through_the_real_postmark_adapter(make_app):
    from webapp.providers import get_provider, get_sandbox
    from webapp.providers.postmark import PostmarkProvider
    from webapp.sandbox.postmark import PostmarkSandbox

    app = make_app(SANDBOX_WIRE_FORMAT="postmark")
    assert isinstance(get_provider(app.config), PostmarkProvider)
    assert isinstance(get_sandbox(app.config), PostmarkSandbox)


def scheduled(app) -> set[str]:
    """The job names `flask scheduler` would schedule for this app."""
    scheduler = CronScheduler(connection=app.extensions["redis"])
    with app.app_context():
        scheduler.load_config_from_file("jobs.cron")
    return {job.func_name for job in scheduler._cron_jobs}


def test_the_sandbox_tick_is_scheduled_only_with_a_sandbox(make_app):
    demo = make_app(SANDBOX_WEBHOOK_URL="http://127.0.0.1:5000/webhooks/sendgrid/events")
    assert "jobs.maintenance.sandbox_tick" in scheduled(demo)
    real = make_app(EMAIL_PROVIDER="sendgrid", SENDGRID_API_KEY="SG.test")
    jobs = scheduled(real)
    assert "jobs.maintenance.sandbox_tick" not in jobs
    assert {"jobs.maintenance.sweep", "jobs.polling.poll_provider"} <= jobs


def test_the_sandbox_is_not_imported_with_a_real_provider(tmp_path):
    """Every module of the app and its jobs loads, and the provider is built, without webapp.sandbox."""
    script = textwrap.dedent(
        """
        import importlib, sys
        from pathlib import Path
        # Not pkgutil.walk_packages: it imports every package it walks, the sandbox's too.
        for path in sorted([*Path("webapp").rglob("*.py"), *Path("jobs").rglob("*.py")]):
            name = ".".join(path.with_suffix("").parts).removesuffix(".__init__")
            if not name.startswith(("webapp.sandbox", "webapp.migrations", "jobs.cron")):
                importlib.import_module(name)
        from webapp.providers import get_provider
        provider = get_provider({"EMAIL_PROVIDER": "sendgrid", "SENDGRID_API_KEY": "SG.x",
            "SENDGRID_API_BASE": "https://api.sendgrid.com", "SEND_TIMEOUT_SECONDS": 5,
            "SENDGRID_WEBHOOK_PUBLIC_KEY": "", "WEBHOOK_TOLERANCE_SECONDS": 600})
        loaded = sorted(name for name in sys.modules if name.startswith("webapp.sandbox"))
        print(provider.name, loaded)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "sendgrid []"


def test_a_state_file_another_process_is_setting_up_is_opened_again_not_refused(tmp_path, monkeypatch):
    """Opening a new state file while another process sets up its WAL index can fail with SQLite's
    "disk I/O error" (seen when two web processes take their first webhook at once): it is tried
    again, as a lock is, and any other error still fails at once."""
    import sqlite3

    from webapp.sandbox import state_file, store

    connect = state_file.connect
    failures = [sqlite3.OperationalError("disk I/O error"), sqlite3.OperationalError("database is locked")]

    def half_made(path: str) -> sqlite3.Connection:
        if failures:
            raise failures.pop(0)
        return connect(path)

    monkeypatch.setattr(state_file, "connect", half_made)
    opened = store.Store(str(tmp_path / "state.sqlite3"))
    assert failures == [] and opened.message("none") is None

    def broken(path: str) -> sqlite3.Connection:
        raise sqlite3.OperationalError("no such table")

    monkeypatch.setattr(state_file, "connect", broken)
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        store.Store(str(tmp_path / "other.sqlite3"))
