"""The clinic email log: application factory."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from flask import Flask
from redis import Redis
from redis.exceptions import RedisError

from config import BASE_DIR, ConfigError, load_settings
from webapp import timezones  # noqa: F401 - zone rules from the pinned package, process-wide
from webapp.database import end_sessions_quietly, warn_if_app_role_can_rewrite_audit
from webapp.extensions import csrf, db, htmx, limiter, login_manager, migrate
from webapp.private_files import ensure_private_file
from webapp.redis_keys import redis_key
from webapp.services.login_throttle import LoginThrottle


class StartupError(RuntimeError):
    """A service the app needs does not answer; the message says what to fix, in one line."""


def create_app(config_overrides: dict[str, Any] | None = None) -> Flask:
    """Create and configure the app; raise ConfigError or StartupError on bad settings."""
    app = Flask(
        __name__,
        instance_path=str(
            (config_overrides or {}).get("INSTANCE_PATH")
            or os.environ.get("INSTANCE_PATH")
            or BASE_DIR / "instance"
        ),
        template_folder=str(BASE_DIR / "templates"),
        static_folder=str(BASE_DIR / "static"),
    )
    os.makedirs(app.instance_path, exist_ok=True)
    from webapp.params import IdConverter

    app.url_map.converters["int"] = IdConverter
    settings = load_settings(app.instance_path, config_overrides)
    app.config.update(settings)
    _configure_flask(app)
    if not app.config["REDIS_URL"]:
        from webapp import embedded_redis

        try:
            app.config["REDIS_URL"] = embedded_redis.start(app.instance_path)
        except embedded_redis.EmbeddedRedisError as error:
            raise StartupError(f"{error}; or set REDIS_URL to a running Redis") from None
    app.config.setdefault("RATELIMIT_STORAGE_URI", _limits_storage_uri(app.config["REDIS_URL"]))
    # Flask-Limiter's keys under the app's prefix too (webapp/redis_keys.py).
    app.config.setdefault("RATELIMIT_STORAGE_OPTIONS", {"key_prefix": redis_key("limits", app=app)})

    _keep_sqlite_private(app.config["DATABASE_URL"])
    db.init_app(app)
    end_sessions_quietly(app)
    migrate.init_app(app, db, directory=str(Path(__file__).parent / "migrations"))
    login_manager.init_app(app)
    csrf.init_app(app)
    htmx.init_app(app)
    limiter.init_app(app)
    app.extensions["redis"] = Redis.from_url(app.config["REDIS_URL"], socket_timeout=5)
    from webapp.freshness.counters import log_channel
    from webapp.freshness.stream import ChangeFeed
    from webapp.services.accounts import sessions_ended_channel

    # Listens to Redis only from the first open log stream or log poll on, in the process that
    # serves it.
    app.extensions["log_feed"] = ChangeFeed(
        app.config["REDIS_URL"],
        log_channel("*", "*", app=app),
        sessions_channel=sessions_ended_channel(app),
        check_seconds=app.config["LOG_STREAM_HEARTBEAT_SECONDS"],
        max_streams=app.config["LOG_STREAMS_PER_PROCESS"],
    )
    app.extensions["login_throttle"] = LoginThrottle(
        app.extensions["redis"],
        free_failures=app.config["LOGIN_FREE_FAILURES"],
        max_delay_seconds=app.config["LOGIN_MAX_DELAY_SECONDS"],
        # One switch for all sign-in throttling, as for Flask-Limiter.
        enabled=app.config.get("RATELIMIT_ENABLED", True),
    )

    from webapp import (
        attention,
        auth,
        cli,
        clients,
        emails,
        help,
        ops,
        owner,
        security,
        support,
        templating,
        webhooks,
    )
    from webapp.operations import bp as operations_bp

    security.init_app(app)
    templating.init_app(app)
    for blueprint in (
        attention.bp,
        auth.bp,
        clients.bp,
        emails.bp,
        help.bp,
        ops.bp,
        owner.bp,
        support.bp,
        webhooks.bp,
    ):
        app.register_blueprint(blueprint)
    app.register_blueprint(operations_bp)
    if app.config["EMAIL_PROVIDER"] == "sandbox":
        from webapp import demo

        app.register_blueprint(demo.bp)  # the demo's buttons and DNS exist only beside the sandbox
    cli.init_app(app)
    from webapp.freshness import fastpoll

    fastpoll.install(app)  # last: outermost, so an unchanged log poll runs nothing else

    if not app.config.get("SKIP_SERVICE_CHECK"):
        check_services(app)
    return app


def _configure_flask(app: Flask) -> None:
    """Translate our settings into the names Flask and its extensions read."""
    url = app.config["DATABASE_URL"]
    app.config["SQLALCHEMY_DATABASE_URI"] = url
    if url.startswith("sqlite"):
        # Web, worker and scheduler write the same file: wait for locks instead of failing.
        app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {"connect_args": {"timeout": 30}}
    else:
        app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {"pool_pre_ping": True}
    app.config["SESSION_COOKIE_HTTPONLY"] = True
    app.config["SESSION_COOKIE_SAMESITE"] = "Lax"
    # The idle timeout lives in the session itself (security.py); re-signing the cookie on
    # every background poll would only cost time.
    app.config["SESSION_REFRESH_EACH_REQUEST"] = False
    app.config["MAX_CONTENT_LENGTH"] = app.config["WEBHOOK_MAX_BYTES"]
    # A log page stays open for hours; the session's own timeouts bound the token instead.
    app.config["WTF_CSRF_TIME_LIMIT"] = None
    hosts = [host.strip() for host in str(app.config["TRUSTED_HOSTS"]).split(",") if host.strip()]
    app.config["TRUSTED_HOSTS"] = hosts or None
    # Off: they would tell a guesser how many attempts remain, and Flask-Limiter would overwrite
    # the Retry-After of the login delays with its own window. Its 429s get one (security.py).
    app.config.setdefault("RATELIMIT_HEADERS_ENABLED", False)
    # Login must keep working when Redis is briefly away (the limits resume with it).
    app.config.setdefault("RATELIMIT_SWALLOW_ERRORS", True)


def _keep_sqlite_private(url: str) -> None:
    """Create a SQLite database file owner-only: it holds password hashes and client data."""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
        ensure_private_file(parsed.database)


def _limits_storage_uri(redis_url: str) -> str:
    """Keep login throttling in Redis, shared by every web process."""
    if redis_url.startswith("unix://"):
        return "redis+unix://" + redis_url[len("unix://") :]
    return redis_url


def check_services(app: Flask) -> None:
    """Fail start-up with one clear line when the database or Redis does not answer."""
    with app.app_context():
        try:
            with db.engine.connect() as connection:
                connection.execute(sa.text("SELECT 1"))
                if app.config["APP_ENV"] == "production":
                    warn_if_app_role_can_rewrite_audit(connection)
        except sa.exc.SQLAlchemyError as error:
            reason = str(getattr(error, "orig", error)).strip().splitlines()[0]
            url = _redact(app.config["DATABASE_URL"])
            raise StartupError(
                f"cannot reach the database at DATABASE_URL={url} ({reason}); "
                "check that it is running and the URL is right"
            ) from None
    try:
        app.extensions["redis"].ping()
    except RedisError as error:
        raise StartupError(
            f"cannot reach Redis at REDIS_URL={_redact(app.config['REDIS_URL'])} ({error}); "
            "check that it is running and the URL is right"
        ) from None


def _redact(url: str) -> str:
    """Hide a password inside a URL before printing it."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return url.split("@")[-1]


__all__ = ["ConfigError", "StartupError", "create_app"]
