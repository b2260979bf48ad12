"""Settings, read from the environment (and an optional `.env` file) with the same names
accepted as keys of `create_app(config_overrides)`.

SETTINGS is the whole list: each setting's name, type, default, the check of its value, and the
check production adds (a new setting is one more line). RULES check settings against each other.
The words the checks are written in are in config_checks.py.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

from dotenv import load_dotenv

from config_checks import (
    MIN_SECRET_LENGTH,
    NEW_SECRET_HINT,
    Check,
    at_least,
    both,
    database_url,
    development_secret,
    flag,
    is_p256_public_key,
    is_weak_secret,
    one_of,
    required,
    reused_secret,
    same_database,
    strong,
    that,
    warn,
)

BASE_DIR = Path(__file__).resolve().parent
load_dotenv(BASE_DIR / ".env")

LOG_DAYS = 30  # the email log shows this many days; records are kept longer
# A default worked out from the other settings and the instance folder, once they are read.
Derived = Callable[[dict[str, Any], str], Any]


class ConfigError(RuntimeError):
    """A setting is missing or wrong; the message says what to fix, in one line."""


def _production(settings: dict[str, Any]) -> bool:
    return settings["APP_ENV"] == "production"


def development_only(default: Derived) -> Derived:
    """A default for development: production must set the setting itself."""
    return lambda settings, instance: None if _production(settings) else default(settings, instance)


# How each type reads a value given as text, and what a value it cannot read should have been.
READERS: dict[Any, tuple[Callable[[Any], Any], str]] = {
    str: (lambda value: value, "text"),
    int: (int, "a whole number"),
    float: (float, "a number"),
    bool: (flag, "on or off"),
    database_url: (database_url, "a database URL"),
}

# Defaults and checks too long for their setting's line.
SQLITE_DEFAULT = development_only(lambda _, instance: f"sqlite:///{Path(instance) / 'clinic.sqlite3'}")
NOT_SQLITE = "{name} is SQLite; production needs a PostgreSQL URL (postgresql://…)"
POSTGRESQL = both(
    required("production needs a PostgreSQL URL"), that(lambda url: not url.startswith("sqlite"), NOT_SQLITE)
)
NOT_SANDBOX = that(
    lambda provider: provider != "sandbox",
    "EMAIL_PROVIDER=sandbox is the built-in simulator (its inbound route is open and it signs its own "
    "webhooks); production needs EMAIL_PROVIDER=sendgrid or postmark",
)
HTTPS = that(
    lambda url: str(url).startswith("https://"),
    "{name} must start with https:// in production (the API key travels with it)",
)
P256 = that(
    lambda key: not key or is_p256_public_key(key),
    "{name} is not a base64 DER P-256 public key; copy it from SendGrid's Event Webhook settings (it "
    "starts with MFkw)",
)
SESSION_SECRET = both(
    required(f"production needs a long random one: {NEW_SECRET_HINT}"),
    strong(" for production (anyone could forge sessions)"),
)
SECURE_COOKIE = that(
    lambda secure: secure is not False,
    "SESSION_COOKIE_SECURE is off; in production the session cookie must travel over HTTPS only: unset it",
)
NAMED_HOSTS = warn(
    lambda hosts: str(hosts).strip(),
    "TRUSTED_HOSTS is empty: the app answers to any Host header; set it to the host names users reach it by",
)
LONGER_THAN_THE_LOG = that(
    lambda days: days > LOG_DAYS,
    f"{{name}} must be more than {LOG_DAYS}: the email log shows {LOG_DAYS} days",
)
SECRET_KEY_DEFAULT = development_only(lambda _, instance: development_secret(instance))
ON_IN_PRODUCTION: Derived = lambda settings, _: _production(settings)  # noqa: E731 - a table cell


class Setting(NamedTuple):
    """One setting: its name, type, default, the check of its value, and the check production adds."""

    name: str
    type: Any  # a key of READERS
    default: Any  # or a Derived function, called once the others are read
    check: Check | None = None
    production: Check | None = None


SETTINGS: tuple[Setting, ...] = (
    # "production" makes missing secrets a start-up error.
    Setting("APP_ENV", str, "development"),
    # Where the app keeps its files (SQLite, the sandbox's state, keys, the embedded Redis); read by
    # create_app before the rest. Default: instance/ beside this file.
    Setting("INSTANCE_PATH", str, lambda _, instance: instance),
    # Default (development only): a SQLite file under instance/.
    Setting("DATABASE_URL", database_url, SQLITE_DEFAULT, production=POSTGRESQL),
    # PostgreSQL: the role that owns the tables runs the migrations (init-db), and the app connects
    # as DATABASE_URL's role, which may read and write rows but neither change the schema nor
    # edit the audit trail. Default: DATABASE_URL (one role for both, as on SQLite).
    Setting("MIGRATION_DATABASE_URL", database_url, lambda settings, _: settings["DATABASE_URL"]),
    Setting("REDIS_URL", str, None),  # default: an embedded Redis server under instance/
    # Every key the app (and its rate limiter) writes starts with this, so apps can share a Redis.
    # RQ's own keys take RQ_KEY_PREFIX, an environment variable RQ reads (default "rq").
    Setting("REDIS_KEY_PREFIX", str, "clinicmail:"),
    # Start without checking that the database and Redis answer (create_app).
    Setting("SKIP_SERVICE_CHECK", bool, False),
    Setting("EMAIL_PROVIDER", str, "sandbox", one_of("sandbox", "sendgrid", "postmark"), NOT_SANDBOX),
    Setting("SENDGRID_API_KEY", str, ""),
    Setting("SENDGRID_API_BASE", str, "https://api.sendgrid.com", production=HTTPS),
    Setting("SENDGRID_WEBHOOK_PUBLIC_KEY", str, "", P256),
    # Postmark: the server token (sending, messages, suppressions), its API, the message stream,
    # and the HTTP Basic credentials its webhook URL carries (Postmark signs nothing).
    Setting("POSTMARK_SERVER_TOKEN", str, ""),
    Setting("POSTMARK_API_BASE", str, "https://api.postmarkapp.com", production=HTTPS),
    Setting("POSTMARK_MESSAGE_STREAM", str, "outbound"),
    Setting("POSTMARK_WEBHOOK_USERNAME", str, ""),
    Setting("POSTMARK_WEBHOOK_PASSWORD", str, ""),
    # Default (development only): generated once into instance/secret_key.
    Setting("SECRET_KEY", str, SECRET_KEY_DEFAULT, production=SESSION_SECRET),
    Setting("SUPPORT_ADDRESS", str, "support@clinicmail.example"),
    Setting("MAIL_FROM_ADDRESS", str, "no-reply@clinicmail.example"),
    Setting("MAIL_FROM_NAME", str, ""),  # empty: the clinic's name
    # Event webhook: how far a signed timestamp may be from our clock (either way: a provider's
    # clock, or ours, may be hours off; a copy is recognised as a replay for as long), and the
    # largest body we read.
    Setting("WEBHOOK_TOLERANCE_SECONDS", int, 3 * 3600),
    Setting("WEBHOOK_MAX_BYTES", int, 5 * 1024 * 1024),
    # Requests a minute to the provider's records (SendGrid's Email Activity, Postmark's Messages
    # API), shared by all workers; 0: the provider's own figure (SendGrid publishes 6, Postmark none:
    # we keep to 240). Set it when an account's plan allows another figure.
    Setting(
        "ACTIVITY_REQUESTS_PER_MINUTE",
        int,
        0,
        that(lambda value: value >= 0, "{name} must be 0 (the provider's own limit) or more"),
    ),
    Setting("POLL_BATCH_SIZE", int, 50),
    # Sandbox provider: where it keeps its state, where it posts signed event batches, and how fast
    # its simulated deliveries go (tests speed them up).
    Setting("SANDBOX_STATE_PATH", str, lambda _, instance: str(Path(instance) / "sandbox.sqlite3")),
    Setting("SANDBOX_WEBHOOK_URL", str, ""),
    Setting("SANDBOX_SPEED", float, 1.0, that(lambda speed: speed > 0, "{name} must be greater than 0")),
    # Which provider the sandbox plays: its API and webhooks in that provider's wire format.
    Setting("SANDBOX_WIRE_FORMAT", str, "sendgrid", one_of("sendgrid", "postmark")),
    # Seconds the sandbox provider's clock runs ahead of ours (negative: behind), to play a skewed
    # provider clock: its event times and signed webhook times are off by as much.
    Setting("SANDBOX_CLOCK_SKEW_SECONDS", int, 0),
    # How often an open email log refreshes itself, in seconds: fast while a row is in flight,
    # and not much slower after (an open, a click or a spam report may come at any time; the
    # unchanged answer is cheap, webapp/freshness/fastpoll.py), so any change shows within 5 s.
    Setting("LOG_POLL_FAST_SECONDS", int, 3),
    Setting("LOG_POLL_SLOW_SECONDS", int, 4),
    # Push: an open log also listens on an event stream that says when it changed (Redis pub/sub,
    # webapp/freshness/stream.py); each stream ends after this many seconds and the browser
    # opens a new one. 0 turns the push off (the log polls as above). Needs an async web worker
    # (gunicorn -k gevent): with threads, each open stream holds a thread.
    Setting("LOG_STREAM_SECONDS", int, 600, that(lambda time: time >= 0, "{name} must be 0 (off) or more")),
    # A comment this often keeps an idle stream open through proxies, finds browsers that left,
    # and ends the stream of a session that timed out.
    Setting("LOG_STREAM_HEARTBEAT_SECONDS", int, 25, at_least(1)),
    # Open streams one user may hold across sessions and web processes, and one web process holds
    # (well below gunicorn's --worker-connections: 1000 under flask up); past either, 429 and the
    # browser polls. A new sign-in past SESSIONS_PER_USER ends that user's oldest session.
    Setting("LOG_STREAMS_PER_USER", int, 10, at_least(1)),
    Setting("LOG_STREAMS_PER_PROCESS", int, 400, at_least(1)),
    Setting("SESSIONS_PER_USER", int, 10, at_least(1)),
    # While its stream is open, the log polls only this often, or when a row turns stuck if
    # sooner: for a change whose announcement was lost (a Redis hiccup the stream outlived).
    Setting("LOG_POLL_STREAM_SECONDS", int, 300, at_least(1)),
    Setting("SEND_TIMEOUT_SECONDS", int, 15),
    # A send whose worker has said nothing for this long died mid-call: check whether it arrived.
    Setting("SEND_ABANDONED_SECONDS", int, 120),
    # How long the provider's activity records may lag behind a send: an email whose send is in
    # doubt is sent again only when they do not show it this long after the attempt.
    Setting("IN_DOUBT_GRACE_SECONDS", int, 300, at_least(1)),
    Setting("TRUSTED_HOSTS", str, "", production=NAMED_HOSTS),  # comma-separated; empty: any host
    Setting("SESSION_COOKIE_SECURE", bool, ON_IN_PRODUCTION, production=SECURE_COOKIE),
    # Failed sign-ins of one account from one address: the first few are free, then each waits
    # twice as long as the last (1 s, 2 s, 4 s …) up to the maximum. Other addresses are not slowed.
    Setting("LOGIN_FREE_FAILURES", int, 3),
    # A failed sign-in is answered no sooner than this, whether the account exists or not. Keep it
    # above the time of one password hash (scrypt: about 0.1 to 0.3 s).
    Setting("LOGIN_FAILURE_SECONDS", float, 0.5),
    Setting("LOGIN_MAX_DELAY_SECONDS", int, 15 * 60),
    # Failed attempts per client address: a clinic's staff often share one address behind NAT.
    Setting("LOGIN_ADDRESS_RATE_LIMIT", str, "30 per 15 minutes"),
    # Event webhook requests refused for their credentials: per source address, then 429; and how
    # many from all sources within 10 minutes alert the operators (webapp/services/webhook_guard.py).
    Setting("WEBHOOK_FAILURE_RATE_LIMIT", str, "20 per 10 minutes"),
    Setting("WEBHOOK_FAILURE_ALERT_COUNT", int, 10),
    # Refused additions of a user per clinic owner: each says an address cannot be used.
    Setting("ADD_USER_REFUSAL_LIMIT", str, "20 per hour"),
    # Email previews per user: each keeps its HTML part (up to ~80 KB) in Redis for 15 minutes.
    Setting("PREVIEW_RATE_LIMIT", str, "30 per minute"),
    # A moving window: no double burst at the edge of a fixed window.
    Setting("RATELIMIT_STRATEGY", str, "moving-window"),
    # How many reverse proxies stand in front of the app; their X-Forwarded-For/-Proto are
    # trusted (the client address feeds login throttling). 0: use the connecting address.
    Setting("TRUSTED_PROXIES", int, 0),
    # Inbound Parse (removal requests mailed to support): the password SendGrid sends with HTTP
    # Basic auth (put it in the Inbound Parse URL). Empty closes the route, except in the sandbox.
    Setting("INBOUND_WEBHOOK_SECRET", str, "", production=strong()),
    # (Postmark's inbound webhook carries POSTMARK_WEBHOOK_USERNAME/PASSWORD instead.)
    # Either inbound post; SendGrid accepts mail up to 30 MB.
    Setting("INBOUND_MAX_BYTES", int, 32 * 1024 * 1024),
    # A removal request signed or dated longer ago than this may be an old mail sent again.
    Setting("REMOVAL_MAX_AGE_DAYS", int, 7),
    # The check of one removal mail (its DKIM signatures) must end within this many seconds;
    # each DNS lookup of a signing key gives up after DKIM_DNS_TIMEOUT_SECONDS.
    Setting("INBOUND_CHECK_SECONDS", int, 30),
    Setting("DKIM_DNS_TIMEOUT_SECONDS", int, 5),
    Setting("PASSWORD_HASH_METHOD", str, "scrypt"),
    # Emails, their events and raw payloads, webhook bodies, kept unknown events and removal-mail
    # bodies older than this many days are purged (services/retention.py). The log shows 30.
    Setting("RETENTION_DAYS", int, 400, LONGER_THAN_THE_LOG),
    # The audit trail's own retention, in days; 0 keeps it for ever. Only `flask purge-audit`,
    # run as the owner of the tables, acts on it: the app's own role cannot delete audit lines.
    Setting("AUDIT_RETENTION_DAYS", int, 0),
    # Rows per purge transaction: small, so each one holds its locks for milliseconds.
    Setting("RETENTION_BATCH_SIZE", int, 500, at_least(1)),
    # A bearer token that lets a Prometheus scraper read /metrics; empty: support users only.
    Setting("METRICS_TOKEN", str, "", strong()),
)
# name -> default (None: worked out from the others, see SETTINGS).
DEFAULTS: dict[str, Any] = {
    setting.name: None if callable(setting.default) else setting.default for setting in SETTINGS
}


class Rule(NamedTuple):
    """Settings that do not go together: `broken(settings)` says when (a tuple of names fills the
    message's {0}, {1}), `message` what to fix."""

    broken: Callable[[dict[str, Any]], Any]
    message: str
    production: bool = False  # only with APP_ENV=production


RULES: tuple[Rule, ...] = (
    Rule(
        lambda s: s["SEND_ABANDONED_SECONDS"] <= s["SEND_TIMEOUT_SECONDS"],
        "SEND_ABANDONED_SECONDS must be longer than SEND_TIMEOUT_SECONDS (a send still waiting for the "
        "provider is not abandoned)",
    ),
    Rule(
        lambda s: s["AUDIT_RETENTION_DAYS"] and s["AUDIT_RETENTION_DAYS"] < s["RETENTION_DAYS"],
        "AUDIT_RETENTION_DAYS must be 0 (keep for ever) or at least RETENTION_DAYS",
    ),
    Rule(
        lambda s: s["EMAIL_PROVIDER"] == "sendgrid" and not s["SENDGRID_API_KEY"],
        "EMAIL_PROVIDER=sendgrid needs SENDGRID_API_KEY (an API key with Mail Send access)",
    ),
    Rule(
        lambda s: s["EMAIL_PROVIDER"] == "postmark" and not s["POSTMARK_SERVER_TOKEN"],
        "EMAIL_PROVIDER=postmark needs POSTMARK_SERVER_TOKEN (the server's API token)",
    ),
    Rule(
        lambda s: bool(s["POSTMARK_WEBHOOK_USERNAME"]) != bool(s["POSTMARK_WEBHOOK_PASSWORD"]),
        "set both POSTMARK_WEBHOOK_USERNAME and POSTMARK_WEBHOOK_PASSWORD, or neither",
    ),
    Rule(
        lambda s: s["DATABASE_URL"] and not same_database(s["DATABASE_URL"], s["MIGRATION_DATABASE_URL"]),
        "MIGRATION_DATABASE_URL must name the same database as DATABASE_URL (same host, port and name), "
        "as the role that owns the tables",
    ),
    Rule(
        lambda s: s["EMAIL_PROVIDER"] == "sendgrid" and not s["SENDGRID_WEBHOOK_PUBLIC_KEY"],
        "EMAIL_PROVIDER=sendgrid needs SENDGRID_WEBHOOK_PUBLIC_KEY, or no delivery event is ever "
        "accepted; turn on the Event Webhook's signature in SendGrid and copy its public key",
        production=True,
    ),
    Rule(
        lambda s: (
            s["EMAIL_PROVIDER"] == "postmark"
            and (not s["POSTMARK_WEBHOOK_USERNAME"] or is_weak_secret(s["POSTMARK_WEBHOOK_PASSWORD"] or ""))
        ),
        "EMAIL_PROVIDER=postmark needs POSTMARK_WEBHOOK_USERNAME and a POSTMARK_WEBHOOK_PASSWORD of at "
        f"least {MIN_SECRET_LENGTH} random characters ({NEW_SECRET_HINT}), or no delivery event is "
        "ever accepted; put them in the webhook URL in Postmark (https://user:password@host/...)",
        production=True,
    ),
    Rule(
        reused_secret, "{0} and {1} share a secret; give each its own random value: " + NEW_SECRET_HINT, True
    ),
)


def load_settings(instance_path: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Return the app's settings: defaults, then the environment, then the overrides; raise
    ConfigError with one line that says what to fix when one is wrong."""
    overrides = overrides or {}
    settings: dict[str, Any] = dict(overrides)  # names outside the table pass through (Flask's own)
    for setting in SETTINGS:
        settings[setting.name] = _read(setting, overrides.get(setting.name, os.environ.get(setting.name)))
    for setting in SETTINGS:
        if callable(setting.default) and settings[setting.name] in (None, ""):
            settings[setting.name] = setting.default(settings, instance_path)
    problem = next((problem for problem in _problems(settings) if problem), None)
    if problem:
        raise ConfigError(problem)
    return settings


def _read(setting: Setting, given: Any) -> Any:
    """The setting's value as its type, from what was given (None: its default)."""
    if given is None:
        if setting.default is None or callable(setting.default):
            return None
        given = setting.default
    read, should_be = READERS[setting.type]
    try:
        return read(given)
    except (TypeError, ValueError):
        raise ConfigError(f"{setting.name} must be {should_be}, got {given!r}") from None


def _problems(settings: dict[str, Any]) -> Iterator[str | None]:
    """What is wrong with the settings, one check at a time, in order (production's last)."""
    for setting in SETTINGS:
        if setting.check:
            yield setting.check(setting.name, settings[setting.name])
    yield from (_broken(rule, settings) for rule in RULES if not rule.production)
    if _production(settings):
        for setting in SETTINGS:
            if setting.production:
                yield setting.production(setting.name, settings[setting.name])
        yield from (_broken(rule, settings) for rule in RULES if rule.production)


def _broken(rule: Rule, settings: dict[str, Any]) -> str | None:
    found = rule.broken(settings)
    if not found:
        return None
    return rule.message.format(*found) if isinstance(found, tuple) else rule.message
