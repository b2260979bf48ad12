"""EMAIL_PROVIDER=postmark: its settings, what production demands, and the provider the factory builds."""

from __future__ import annotations

import secrets

import pytest

from config import DEFAULTS, ConfigError, load_settings
from webapp.providers import get_provider
from webapp.providers.postmark import PostmarkProvider


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    """These tests read settings from the environment: start from none (CI sets some)."""
    for name in DEFAULTS:
        monkeypatch.delenv(name, raising=False)


def postmark_production(**changes: str | None) -> dict[str, str]:
    settings = {
        "APP_ENV": "production",
        "DATABASE_URL": "postgresql://x/y",
        "SECRET_KEY": secrets.token_urlsafe(48),
        "EMAIL_PROVIDER": "postmark",
        "POSTMARK_SERVER_TOKEN": "server-token",
        "POSTMARK_WEBHOOK_USERNAME": "postmark",
        "POSTMARK_WEBHOOK_PASSWORD": secrets.token_urlsafe(32),
        "TRUSTED_HOSTS": "clinic.example",
    }
    settings.update(changes)
    return {name: value for name, value in settings.items() if value is not None}


def test_postmark_defaults_and_a_complete_production_configuration(tmp_path):
    settings = load_settings(str(tmp_path), postmark_production())
    assert settings["POSTMARK_API_BASE"] == "https://api.postmarkapp.com"
    assert settings["POSTMARK_MESSAGE_STREAM"] == "outbound"


def test_postmark_needs_its_server_token(tmp_path):
    with pytest.raises(ConfigError, match="needs POSTMARK_SERVER_TOKEN"):
        load_settings(str(tmp_path), {"EMAIL_PROVIDER": "postmark"})


@pytest.mark.parametrize(
    "changes",
    [
        {"POSTMARK_WEBHOOK_USERNAME": None, "POSTMARK_WEBHOOK_PASSWORD": None},
        {"POSTMARK_WEBHOOK_PASSWORD": "password"},
        {"POSTMARK_WEBHOOK_PASSWORD": "short"},
    ],
)
def test_production_with_postmark_needs_strong_webhook_credentials(tmp_path, changes):
    with pytest.raises(ConfigError, match="POSTMARK_WEBHOOK_PASSWORD"):
        load_settings(str(tmp_path), postmark_production(**changes))


def test_half_the_webhook_credentials_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="set both"):
        load_settings(
            str(tmp_path),
            {"EMAIL_PROVIDER": "postmark", "POSTMARK_SERVER_TOKEN": "t", "POSTMARK_WEBHOOK_USERNAME": "u"},
        )


def test_the_factory_builds_postmark_with_its_settings(tmp_path):
    settings = load_settings(
        str(tmp_path),
        {
            "EMAIL_PROVIDER": "postmark",
            "POSTMARK_SERVER_TOKEN": "server-token",
            "POSTMARK_API_BASE": "https://postmark-compatible.example",
            "POSTMARK_MESSAGE_STREAM": "reminders",
            "POSTMARK_WEBHOOK_USERNAME": "hook",
            "POSTMARK_WEBHOOK_PASSWORD": "pw",
        },
    )
    provider = get_provider(settings)
    assert isinstance(provider, PostmarkProvider) and provider.name == "postmark"
    assert provider.max_batch == 500
    assert provider.message_stream() == "reminders"
    assert provider.api_base() == "https://postmark-compatible.example"
    assert get_provider(settings) is provider  # one pool of connections per process and setting
