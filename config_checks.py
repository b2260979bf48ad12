"""The words config.py's table is written in: readers of a value, checks of it, and what makes a
configured secret weak (and which secrets must differ)."""

from __future__ import annotations

import base64
import binascii
import logging
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger("config")

# Placeholders people paste from examples; a random key contains none of them by chance.
PLACEHOLDER_SECRETS = ("changeme", "change-me", "change_me", "secret", "password", "example", "insecure")
MIN_SECRET_LENGTH = 32
NEW_SECRET_HINT = "python -c 'import secrets; print(secrets.token_urlsafe(48))'"
# Secrets that must each be different: one leaked (a webhook URL in a provider's settings, a
# scraper's config) must not give away another, least of all SECRET_KEY, which signs sessions.
SECRET_SETTINGS = (
    "SECRET_KEY",
    "INBOUND_WEBHOOK_SECRET",
    "POSTMARK_WEBHOOK_PASSWORD",
    "METRICS_TOKEN",
    "SENDGRID_API_KEY",
    "POSTMARK_SERVER_TOKEN",
)

# A check says what is wrong with a setting's value, in one line; None when nothing is.
Check = Callable[[str, Any], "str | None"]


def that(ok: Callable[[Any], Any], problem: str) -> Check:
    """A check: `problem` (its {name} and {value} filled in) unless `ok(value)`."""
    return lambda name, value: None if ok(value) else problem.format(name=name, value=value)


def at_least(low: int) -> Check:
    """A check that the value is `low` or more."""
    return that(lambda value: value >= low, f"{{name}} must be at least {low}")


def one_of(*choices: str) -> Check:
    """A check that the value is one of `choices`."""
    problem = "{name}={value!r} is not known; use one of: " + ", ".join(choices)
    return that(lambda value: value in choices, problem)


def strong(why: str = "") -> Check:
    """A check that a secret, when set, is not weak (`required` says when one must be set)."""
    problem = f"{{name}} is too weak{why}; use at least {MIN_SECRET_LENGTH} random characters: "
    problem += NEW_SECRET_HINT
    return that(lambda value: not value or not is_weak_secret(str(value)), problem)


def required(why: str) -> Check:
    """A check that the value is set."""
    return that(bool, "{name} is not set; " + why)


def both(first: Check, second: Check) -> Check:
    """A check that passes both checks (the first problem found)."""
    return lambda name, value: first(name, value) or second(name, value)


def warn(ok: Callable[[Any], Any], message: str) -> Check:
    """Not a refusal: log `message` unless `ok(value)`."""

    def check(name: str, value: Any) -> None:
        if not ok(value):
            log.warning(message)

    return check


def flag(value: Any) -> bool | None:
    """Read an on/off setting ("1", "true", "yes" are on); None when it is not set."""
    if value is None or isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("1", "true", "yes")


def database_url(value: Any) -> Any:
    """Read a database URL: PostgreSQL through psycopg 3, whichever spelling was given."""
    for prefix in ("postgres://", "postgresql://"):
        if value and value.startswith(prefix):
            return "postgresql+psycopg://" + value[len(prefix) :]
    return value


def same_database(url: str, other: str) -> bool:
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


def development_secret(instance_path: str) -> str:
    """Generate a secret once and keep it under instance/, so sessions survive restarts."""
    from webapp.private_files import write_private_file_once

    path = Path(instance_path) / "secret_key"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private_file_once(path, secrets.token_urlsafe(48).encode())
    return path.read_text().strip()


def is_weak_secret(secret: str) -> bool:
    """Return whether a secret is short, repetitive, a repeated pattern or a well-known placeholder."""
    lowered = secret.lower()
    return (
        len(secret) < MIN_SECRET_LENGTH
        or len(set(secret)) < 10
        or any(word in lowered for word in PLACEHOLDER_SECRETS)
        or repeats(secret)
    )


def repeats(secret: str, length: int = 8) -> bool:
    """Return whether any `length` characters in a row come again later: a pattern, not chance.

    In a random key of 64 characters (token_urlsafe or token_hex) that happens less than once
    in a million keys.
    """
    seen: set[str] = set()
    for start in range(len(secret) - length + 1):
        part = secret[start : start + length]
        if part in seen:
            return True
        seen.add(part)
    return False


def reused_secret(settings: Mapping[str, Any]) -> tuple[str, str] | None:
    """Return the first two secret settings that are, or hold a long part of, one another."""
    given = [(name, str(settings[name])) for name in SECRET_SETTINGS if settings.get(name)]
    for index, (name, value) in enumerate(given):
        for other, other_value in given[index + 1 :]:
            if shares_part(value, other_value):
                return name, other
    return None


def shares_part(first: str, second: str, length: int = 16) -> bool:
    """Return whether two secrets are equal or have `length` characters in a row in common."""
    if first == second:
        return True
    parts = {first[start : start + length] for start in range(len(first) - length + 1)}
    return any(second[start : start + length] in parts for start in range(len(second) - length + 1))
