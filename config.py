"""Settings, read from the environment (and an optional `.env` file) with the same names
accepted as keys of `create_app(config_overrides)`."""

from __future__ import annotations

import base64
import binascii
import logging
import os
import secrets
from pathlib import Path
from typing import Any

from dotenv import load_dotenv

from secret_rules import MIN_SECRET_LENGTH, NEW_SECRET_HINT, is_weak_secret, reused_secret

BASE_DIR = Path(__file__).resolve().parent
load_dotenv(BASE_DIR / ".env")
log = logging.getLogger(__name__)

PROVIDERS = ("sandbox", "sendgrid", "postmark")
SANDBOX_WIRE_FORMATS = ("sendgrid", "postmark")
# Wire formats whose simulator exists yet.
SANDBOX_WIRE_FORMATS_READY = ("sendgrid", "postmark")
LOG_DAYS = 30  # the email log shows this many days; records are kept longer

# name -> default; None means "no default" (the app decides, see load_settings)
DEFAULTS: dict[str, Any] = {
    "APP_ENV": "development",  # "production" makes missing secrets a start-up error
    "DATABASE_URL": None,  # default: SQLite file under instance/
    # PostgreSQL: the role that owns the tables runs the migrations (init-db), and the app connects
    # as DATABASE_URL's role, which may read and write rows but neither change the schema nor
    # edit the audit trail. Default: DATABASE_URL (one role for both, as on SQLite).
    "MIGRATION_DATABASE_URL": None,
    "REDIS_URL": None,  # default: an embedded Redis server under instance/
    "EMAIL_PROVIDER": "sandbox",
    "SENDGRID_API_KEY": "",
    "SENDGRID_API_BASE": "https://api.sendgrid.com",
    "SENDGRID_WEBHOOK_PUBLIC_KEY": "",
    # Postmark: the server token (sending, messages, suppressions), its API, the message stream,
    # and the HTTP Basic credentials its webhook URL carries (Postmark signs nothing).
    "POSTMARK_SERVER_TOKEN": "",
    "POSTMARK_API_BASE": "https://api.postmarkapp.com",
    "POSTMARK_MESSAGE_STREAM": "outbound",
    "POSTMARK_WEBHOOK_USERNAME": "",
    "POSTMARK_WEBHOOK_PASSWORD": "",
    "SECRET_KEY": None,
    "SUPPORT_ADDRESS": "support@clinicmail.example",
    "MAIL_FROM_ADDRESS": "no-reply@clinicmail.example",
    "MAIL_FROM_NAME": "",  # empty: the clinic's name
    # Event webhook: how far a signed timestamp may be from our clock (either way: a provider's
    # clock, or ours, may be hours off; a copy is recognised as a replay for as long), and the
    # largest body we read.
    "WEBHOOK_TOLERANCE_SECONDS": 3 * 3600,
    "WEBHOOK_MAX_BYTES": 5 * 1024 * 1024,
    # Requests a minute to the provider's records (SendGrid's Email Activity, Postmark's Messages
    # API), shared by all workers; 0: the provider's own figure (SendGrid publishes 6, Postmark none:
    # we keep to 240). Set it when an account's plan allows another figure.
    "ACTIVITY_REQUESTS_PER_MINUTE": 0,
    "POLL_BATCH_SIZE": 50,
    # Sandbox provider: where it keeps its state, and where it posts signed event batches.
    "SANDBOX_STATE_PATH": None,  # default: instance/sandbox.sqlite3
    "SANDBOX_WEBHOOK_URL": "",
    "SANDBOX_SPEED": 1.0,  # tests speed the simulated deliveries up
    # Seconds the sandbox provider's clock runs ahead of ours (negative: behind), to play a skewed
    # provider clock: its event times and signed webhook times are off by as much.
    "SANDBOX_CLOCK_SKEW_SECONDS": 0,
    # Which provider the sandbox plays: its API and webhooks in that provider's wire format.
    "SANDBOX_WIRE_FORMAT": "sendgrid",
    # How often an open email log refreshes itself, in seconds: fast while a row is in flight,
    # and not much slower after (an open, a click or a spam report may come at any time; the
    # unchanged answer is cheap, webapp/freshness/fastpoll.py), so any change shows within 5 s.
    "LOG_POLL_FAST_SECONDS": 3,
    "LOG_POLL_SLOW_SECONDS": 4,
    # Answer unchanged log polls in front of Flask (webapp/freshness/fastpoll.py); 0: the view answers
    # them after Flask's hooks instead (only to measure the difference).
    "LOG_POLL_FAST_PATH": 1,
    # Push: an open log also listens on an event stream that says when it changed (Redis pub/sub,
    # webapp/freshness/stream.py); each stream ends after this many seconds and the browser
    # opens a new one. 0 turns the push off (the log polls as above). Needs an async web worker
    # (gunicorn -k gevent): with threads, each open stream holds a thread.
    "LOG_STREAM_SECONDS": 600,
    # A comment this often keeps an idle stream open through proxies, finds browsers that left,
    # and ends the stream of a session that timed out.
    "LOG_STREAM_HEARTBEAT_SECONDS": 25,
    # Open streams one user may hold across sessions and web processes, and one web process holds
    # (well below gunicorn's --worker-connections: 1000 under flask up); past either, 429 and the
    # browser polls. A new sign-in past SESSIONS_PER_USER ends that user's oldest session.
    "LOG_STREAMS_PER_USER": 10,
    "LOG_STREAMS_PER_PROCESS": 400,
    "SESSIONS_PER_USER": 10,
    # While its stream is open, the log polls only this often, or when a row turns stuck if
    # sooner: for a change whose announcement was lost (a Redis hiccup the stream outlived).
    "LOG_POLL_STREAM_SECONDS": 300,
    "SEND_TIMEOUT_SECONDS": 15,
    # A send whose worker has said nothing for this long died mid-call: check whether it arrived.
    "SEND_ABANDONED_SECONDS": 120,
    # How long the provider's activity records may lag behind a send: an email whose send is in
    # doubt is sent again only when they do not show it this long after the attempt.
    "IN_DOUBT_GRACE_SECONDS": 300,
    "TRUSTED_HOSTS": "",  # comma-separated; empty allows any host (development)
    "SESSION_COOKIE_SECURE": None,  # default: on in production
    # Failed sign-ins of one account from one address: the first few are free, then each waits
    # twice as long as the last (1 s, 2 s, 4 s …) up to the maximum. Other addresses are not slowed.
    "LOGIN_FREE_FAILURES": 3,
    # A failed sign-in is answered no sooner than this, whether the account exists or not. Keep it
    # above the time of one password hash (scrypt: about 0.1 to 0.3 s).
    "LOGIN_FAILURE_SECONDS": 0.5,
    "LOGIN_MAX_DELAY_SECONDS": 15 * 60,
    # Failed attempts per client address: a clinic's staff often share one address behind NAT.
    "LOGIN_ADDRESS_RATE_LIMIT": "30 per 15 minutes",
    # Event webhook requests refused for their credentials: per source address, then 429; and how
    # many from all sources within 10 minutes alert the operators (webapp/services/webhook_guard.py).
    "WEBHOOK_FAILURE_RATE_LIMIT": "20 per 10 minutes",
    "WEBHOOK_FAILURE_ALERT_COUNT": 10,
    # Refused additions of a user per clinic owner: each says an address cannot be used.
    "ADD_USER_REFUSAL_LIMIT": "20 per hour",
    # A moving window: no double burst at the edge of a fixed window.
    "RATELIMIT_STRATEGY": "moving-window",
    # How many reverse proxies stand in front of the app; their X-Forwarded-For/-Proto are
    # trusted (the client address feeds login throttling). 0: use the connecting address.
    "TRUSTED_PROXIES": 0,
    # Inbound Parse (removal requests mailed to support): the password SendGrid sends with HTTP
    # Basic auth (put it in the Inbound Parse URL). Empty closes the route, except in the sandbox.
    # (Postmark's inbound webhook carries POSTMARK_WEBHOOK_USERNAME/PASSWORD instead.)
    "INBOUND_WEBHOOK_SECRET": "",
    "INBOUND_MAX_BYTES": 32 * 1024 * 1024,  # either inbound post; SendGrid accepts mail up to 30 MB
    # A removal request signed or dated longer ago than this may be an old mail sent again.
    "REMOVAL_MAX_AGE_DAYS": 7,
    # The check of one removal mail (its DKIM signatures) must end within this many seconds;
    # each DNS lookup of a signing key gives up after DKIM_DNS_TIMEOUT_SECONDS.
    "INBOUND_CHECK_SECONDS": 30,
    "DKIM_DNS_TIMEOUT_SECONDS": 5,
    "PASSWORD_HASH_METHOD": "scrypt",
    # Emails, their events and raw payloads, webhook bodies, kept unknown events and removal-mail
    # bodies older than this many days are purged (services/retention.py). The log shows 30.
    "RETENTION_DAYS": 400,
    # The audit trail's own retention, in days; 0 keeps it for ever. Only `flask purge-audit`,
    # run as the owner of the tables, acts on it: the app's own role cannot delete audit lines.
    "AUDIT_RETENTION_DAYS": 0,
    # Rows per purge transaction: small, so each one holds its locks for milliseconds.
    "RETENTION_BATCH_SIZE": 500,
    # A bearer token that lets a Prometheus scraper read /metrics; empty: support users only.
    "METRICS_TOKEN": "",
}

INT_SETTINGS = {
    "SANDBOX_CLOCK_SKEW_SECONDS",
    "WEBHOOK_TOLERANCE_SECONDS",
    "WEBHOOK_MAX_BYTES",
    "ACTIVITY_REQUESTS_PER_MINUTE",
    "POLL_BATCH_SIZE",
    "LOG_POLL_FAST_SECONDS",
    "LOG_POLL_SLOW_SECONDS",
    "LOG_POLL_FAST_PATH",
    "LOG_STREAM_SECONDS",
    "LOG_STREAM_HEARTBEAT_SECONDS",
    "LOG_POLL_STREAM_SECONDS",
    "LOG_STREAMS_PER_USER",
    "LOG_STREAMS_PER_PROCESS",
    "SESSIONS_PER_USER",
    "SEND_TIMEOUT_SECONDS",
    "SEND_ABANDONED_SECONDS",
    "IN_DOUBT_GRACE_SECONDS",
    "TRUSTED_PROXIES",
    "INBOUND_MAX_BYTES",
    "REMOVAL_MAX_AGE_DAYS",
    "INBOUND_CHECK_SECONDS",
    "DKIM_DNS_TIMEOUT_SECONDS",
    "LOGIN_FREE_FAILURES",
    "LOGIN_MAX_DELAY_SECONDS",
    "WEBHOOK_FAILURE_ALERT_COUNT",
    "RETENTION_DAYS",
    "AUDIT_RETENTION_DAYS",
    "RETENTION_BATCH_SIZE",
}


class ConfigError(RuntimeError):
    """A setting is missing or wrong; the message says what to fix, in one line."""


def load_settings(instance_path: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Return the app's settings: defaults, then the environment, then the overrides."""
    overrides = overrides or {}
    settings: dict[str, Any] = {}
    for name, default in DEFAULTS.items():
        value = overrides.get(name, os.environ.get(name, default))
        if name == "SANDBOX_SPEED":
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise ConfigError(f"SANDBOX_SPEED must be a number, got {value!r}") from None
            if value <= 0:
                raise ConfigError("SANDBOX_SPEED must be greater than 0")
        if name == "LOGIN_FAILURE_SECONDS":
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise ConfigError(f"LOGIN_FAILURE_SECONDS must be a number, got {value!r}") from None
        if name in INT_SETTINGS and value is not None:
            try:
                value = int(value)
            except (TypeError, ValueError):
                raise ConfigError(f"{name} must be a whole number, got {value!r}") from None
        settings[name] = value
    for name, value in overrides.items():
        settings.setdefault(name, value)

    production = settings["APP_ENV"] == "production"
    if settings["SEND_ABANDONED_SECONDS"] <= settings["SEND_TIMEOUT_SECONDS"]:
        raise ConfigError(
            "SEND_ABANDONED_SECONDS must be longer than SEND_TIMEOUT_SECONDS (a send still waiting "
            "for the provider is not abandoned)"
        )
    if settings["RETENTION_DAYS"] <= LOG_DAYS:
        raise ConfigError(f"RETENTION_DAYS must be more than {LOG_DAYS}: the email log shows {LOG_DAYS} days")
    if settings["AUDIT_RETENTION_DAYS"] and settings["AUDIT_RETENTION_DAYS"] < settings["RETENTION_DAYS"]:
        raise ConfigError("AUDIT_RETENTION_DAYS must be 0 (keep for ever) or at least RETENTION_DAYS")
    if settings["METRICS_TOKEN"] and is_weak_secret(settings["METRICS_TOKEN"]):
        raise ConfigError(
            f"METRICS_TOKEN is too weak; use at least {MIN_SECRET_LENGTH} random characters: "
            f"{NEW_SECRET_HINT}"
        )
    if settings["RETENTION_BATCH_SIZE"] < 1:
        raise ConfigError("RETENTION_BATCH_SIZE must be at least 1")
    if settings["LOG_STREAM_SECONDS"] < 0 or settings["LOG_POLL_STREAM_SECONDS"] < 1:
        raise ConfigError("LOG_STREAM_SECONDS must be 0 (off) or more, LOG_POLL_STREAM_SECONDS at least 1")
    for name in (
        "LOG_STREAM_HEARTBEAT_SECONDS",
        "LOG_STREAMS_PER_USER",
        "LOG_STREAMS_PER_PROCESS",
        "SESSIONS_PER_USER",
    ):
        if settings[name] < 1:
            raise ConfigError(f"{name} must be at least 1")
    if settings["ACTIVITY_REQUESTS_PER_MINUTE"] < 0:
        raise ConfigError("ACTIVITY_REQUESTS_PER_MINUTE must be 0 (the provider's own limit) or more")
    if settings["IN_DOUBT_GRACE_SECONDS"] < 1:
        raise ConfigError("IN_DOUBT_GRACE_SECONDS must be at least 1")
    if settings["EMAIL_PROVIDER"] not in PROVIDERS:
        raise ConfigError(
            f"EMAIL_PROVIDER={settings['EMAIL_PROVIDER']!r} is not known; use one of: {', '.join(PROVIDERS)}"
        )
    if settings["SANDBOX_WIRE_FORMAT"] not in SANDBOX_WIRE_FORMATS:
        raise ConfigError(
            f"SANDBOX_WIRE_FORMAT={settings['SANDBOX_WIRE_FORMAT']!r} is not known; use one of: "
            f"{', '.join(SANDBOX_WIRE_FORMATS)}"
        )
    if (
        settings["EMAIL_PROVIDER"] == "sandbox"
        and settings["SANDBOX_WIRE_FORMAT"] not in SANDBOX_WIRE_FORMATS_READY
    ):
        raise ConfigError(
            f"SANDBOX_WIRE_FORMAT={settings['SANDBOX_WIRE_FORMAT']} is not available yet (no adapter "
            f"for it); use one of: {', '.join(SANDBOX_WIRE_FORMATS_READY)}"
        )
    if settings["EMAIL_PROVIDER"] == "sendgrid" and not settings["SENDGRID_API_KEY"]:
        raise ConfigError("EMAIL_PROVIDER=sendgrid needs SENDGRID_API_KEY (an API key with Mail Send access)")
    if settings["EMAIL_PROVIDER"] == "postmark" and not settings["POSTMARK_SERVER_TOKEN"]:
        raise ConfigError("EMAIL_PROVIDER=postmark needs POSTMARK_SERVER_TOKEN (the server's API token)")
    if bool(settings["POSTMARK_WEBHOOK_USERNAME"]) != bool(settings["POSTMARK_WEBHOOK_PASSWORD"]):
        raise ConfigError("set both POSTMARK_WEBHOOK_USERNAME and POSTMARK_WEBHOOK_PASSWORD, or neither")
    if settings["SENDGRID_WEBHOOK_PUBLIC_KEY"] and not is_p256_public_key(
        settings["SENDGRID_WEBHOOK_PUBLIC_KEY"]
    ):
        raise ConfigError(
            "SENDGRID_WEBHOOK_PUBLIC_KEY is not a base64 DER P-256 public key; copy it from SendGrid's "
            "Event Webhook settings (it starts with MFkw)"
        )
    if production:
        _refuse_unsafe_production(settings)
    if not settings["DATABASE_URL"]:
        if production:
            raise ConfigError("DATABASE_URL is not set; production needs a PostgreSQL URL")
        settings["DATABASE_URL"] = f"sqlite:///{Path(instance_path) / 'clinic.sqlite3'}"
    settings["DATABASE_URL"] = _normalise_database_url(settings["DATABASE_URL"])
    settings["MIGRATION_DATABASE_URL"] = _normalise_database_url(
        settings["MIGRATION_DATABASE_URL"] or settings["DATABASE_URL"]
    )
    if not _same_database(settings["DATABASE_URL"], settings["MIGRATION_DATABASE_URL"]):
        raise ConfigError(
            "MIGRATION_DATABASE_URL must name the same database as DATABASE_URL (same host, port "
            "and name), as the role that owns the tables"
        )
    if not settings["SECRET_KEY"]:
        settings["SECRET_KEY"] = _development_secret(instance_path)
    if not settings["SANDBOX_STATE_PATH"]:
        settings["SANDBOX_STATE_PATH"] = str(Path(instance_path) / "sandbox.sqlite3")
    secure = _flag(settings["SESSION_COOKIE_SECURE"])
    settings["SESSION_COOKIE_SECURE"] = production if secure is None else secure
    return settings


def _flag(value: Any) -> bool | None:
    """Read an on/off setting ("1", "true", "yes" are on); None when it is not set."""
    if value is None or isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("1", "true", "yes")


def _refuse_unsafe_production(settings: dict[str, Any]) -> None:
    """Refuse production settings that would start but leave the app open or deaf."""
    secret = settings["SECRET_KEY"] or ""
    if not secret:
        raise ConfigError(f"SECRET_KEY is not set; production needs a long random one: {NEW_SECRET_HINT}")
    if is_weak_secret(secret):
        raise ConfigError(
            f"SECRET_KEY is too weak for production (anyone could forge sessions); use at least "
            f"{MIN_SECRET_LENGTH} random characters: {NEW_SECRET_HINT}"
        )
    if settings["EMAIL_PROVIDER"] == "sandbox":
        raise ConfigError(
            "EMAIL_PROVIDER=sandbox is the built-in simulator (its inbound route is open and it signs "
            "its own webhooks); production needs EMAIL_PROVIDER=sendgrid or postmark"
        )
    if settings["EMAIL_PROVIDER"] == "sendgrid" and not settings["SENDGRID_WEBHOOK_PUBLIC_KEY"]:
        raise ConfigError(
            "EMAIL_PROVIDER=sendgrid needs SENDGRID_WEBHOOK_PUBLIC_KEY, or no delivery event is ever "
            "accepted; turn on the Event Webhook's signature in SendGrid and copy its public key"
        )
    if settings["EMAIL_PROVIDER"] == "postmark" and (
        not settings["POSTMARK_WEBHOOK_USERNAME"] or is_weak_secret(settings["POSTMARK_WEBHOOK_PASSWORD"])
    ):
        raise ConfigError(
            "EMAIL_PROVIDER=postmark needs POSTMARK_WEBHOOK_USERNAME and a POSTMARK_WEBHOOK_PASSWORD of at "
            f"least {MIN_SECRET_LENGTH} random characters ({NEW_SECRET_HINT}), or no delivery event is "
            "ever accepted; put them in the webhook URL in Postmark (https://user:password@host/...)"
        )
    _refuse_weak_transport_and_storage(settings)
    reused = reused_secret(settings)
    if reused:
        raise ConfigError(
            f"{reused[0]} and {reused[1]} share a secret; give each its own random value: {NEW_SECRET_HINT}"
        )
    if not str(settings["TRUSTED_HOSTS"]).strip():
        log.warning(
            "TRUSTED_HOSTS is empty: the app answers to any Host header; set it to the host names "
            "users reach it by"
        )


def _refuse_weak_transport_and_storage(settings: dict[str, Any]) -> None:
    """Refuse production settings that send a secret in clear or keep the data in a file."""
    if _flag(settings["SESSION_COOKIE_SECURE"]) is False:
        raise ConfigError(
            "SESSION_COOKIE_SECURE is off; in production the session cookie must travel over HTTPS "
            "only: unset it"
        )
    if settings["INBOUND_WEBHOOK_SECRET"] and is_weak_secret(settings["INBOUND_WEBHOOK_SECRET"]):
        raise ConfigError(
            f"INBOUND_WEBHOOK_SECRET is too weak; use at least {MIN_SECRET_LENGTH} random characters: "
            f"{NEW_SECRET_HINT}"
        )
    if str(settings["DATABASE_URL"] or "").startswith("sqlite"):
        raise ConfigError("DATABASE_URL is SQLite; production needs a PostgreSQL URL (postgresql://…)")
    for name in ("SENDGRID_API_BASE", "POSTMARK_API_BASE"):
        if not str(settings[name]).startswith("https://"):
            raise ConfigError(f"{name} must start with https:// in production (the API key travels with it)")


def is_p256_public_key(value: str) -> bool:
    """Return whether the value is a base64 DER P-256 public key, the kind SendGrid signs with."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_der_public_key

    try:
        key = load_der_public_key(base64.b64decode(value.strip(), validate=True))
    except (ValueError, binascii.Error, TypeError, UnsupportedAlgorithm):
        return False
    return isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1)


def _same_database(url: str, other: str) -> bool:
    """Return whether two database URLs name the same database (the roles may differ)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        first, second = make_url(url), make_url(other)
    except ArgumentError:
        return url == other
    return (first.drivername, first.host, first.port, first.database) == (
        second.drivername,
        second.host,
        second.port,
        second.database,
    )


def _normalise_database_url(url: str) -> str:
    """Use psycopg 3 for PostgreSQL URLs, whichever spelling was given."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _development_secret(instance_path: str) -> str:
    """Generate a secret once and keep it under instance/, so sessions survive restarts."""
    from webapp.private_files import write_private_file_once

    path = Path(instance_path) / "secret_key"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private_file_once(path, secrets.token_urlsafe(48).encode())
    return path.read_text().strip()
