"""What makes a configured secret weak, and which secrets must differ (read by config.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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
