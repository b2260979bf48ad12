"""Settings: environment names, generated development secret, clear errors for bad settings."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from config import DEFAULTS, ConfigError, load_settings
from webapp.extensions import db
from webapp.models import Clinic


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    """These tests read settings from the environment: start from none (CI sets some)."""
    for name in DEFAULTS:
        monkeypatch.delenv(name, raising=False)


def test_a_development_secret_is_generated_once_and_kept(tmp_path):
    first = load_settings(str(tmp_path), {})["SECRET_KEY"]
    second = load_settings(str(tmp_path), {})["SECRET_KEY"]
    assert first == second and len(first) >= 40
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0


def test_production_without_a_secret_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        load_settings(str(tmp_path), {"APP_ENV": "production", "DATABASE_URL": "postgresql://x/y"})


def test_production_without_a_database_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="DATABASE_URL"):
        load_settings(str(tmp_path), {"APP_ENV": "production", "SECRET_KEY": "s" * 40})


def test_unknown_provider_and_missing_api_key_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="EMAIL_PROVIDER='postmark-ish' is not known"):
        load_settings(str(tmp_path), {"EMAIL_PROVIDER": "postmark-ish"})
    with pytest.raises(ConfigError, match="SENDGRID_API_KEY"):
        load_settings(str(tmp_path), {"EMAIL_PROVIDER": "sendgrid"})


def test_settings_come_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SUPPORT_ADDRESS", "help@clinic.example")
    monkeypatch.setenv("WEBHOOK_TOLERANCE_SECONDS", "300")
    monkeypatch.setenv("DATABASE_URL", "postgres://u@h/d")
    settings = load_settings(str(tmp_path), {})
    assert settings["SUPPORT_ADDRESS"] == "help@clinic.example"
    assert settings["WEBHOOK_TOLERANCE_SECONDS"] == 300
    assert settings["DATABASE_URL"] == "postgresql+psycopg://u@h/d"
    monkeypatch.setenv("WEBHOOK_TOLERANCE_SECONDS", "ten")
    with pytest.raises(ConfigError, match="whole number"):
        load_settings(str(tmp_path), {})


def test_timestamps_come_back_timezone_aware_utc(app):
    local = datetime(2026, 11, 3, 10, 0, tzinfo=timezone.utc).astimezone()
    clinic = Clinic(name="Time", created_at=local)
    db.session.add(clinic)
    db.session.commit()
    db.session.expire_all()
    stored = db.session.get(Clinic, clinic.id).created_at
    assert stored.tzinfo is not None and stored.utcoffset().total_seconds() == 0
    assert stored == datetime(2026, 11, 3, 10, 0, tzinfo=timezone.utc)


def test_naive_timestamps_are_refused(app):
    db.session.add(Clinic(name="Naive", created_at=datetime(2026, 11, 3, 10, 0)))
    with pytest.raises(Exception, match="naive datetime"):
        db.session.commit()
    db.session.rollback()


def test_a_bad_webhook_key_or_sandbox_speed_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="SENDGRID_WEBHOOK_PUBLIC_KEY"):
        load_settings(str(tmp_path), {"SENDGRID_WEBHOOK_PUBLIC_KEY": "bm90IGEga2V5"})
    for speed in ("fast", "0"):
        with pytest.raises(ConfigError, match="SANDBOX_SPEED"):
            load_settings(str(tmp_path), {"SANDBOX_SPEED": speed})


def test_time_settings_that_would_misjudge_a_send_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="SEND_ABANDONED_SECONDS must be longer than SEND_TIMEOUT_SECONDS"):
        load_settings(str(tmp_path), {"SEND_TIMEOUT_SECONDS": "30", "SEND_ABANDONED_SECONDS": "20"})
    with pytest.raises(ConfigError, match="IN_DOUBT_GRACE_SECONDS must be a whole number"):
        load_settings(str(tmp_path), {"IN_DOUBT_GRACE_SECONDS": "soon"})
    assert load_settings(str(tmp_path), {"IN_DOUBT_GRACE_SECONDS": "60"})["IN_DOUBT_GRACE_SECONDS"] == 60
