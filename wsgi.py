"""WSGI entry point: `gunicorn wsgi:app`, `flask --app wsgi ...`."""

from webapp import ConfigError, StartupError, create_app

try:
    app = create_app()
except (ConfigError, StartupError) as error:
    # One clear line, not a traceback: the message says what to fix.
    raise SystemExit(f"error: {error}") from None
