"""Background jobs: thin RQ entry points that take ids, open an app context and call a service."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from flask import Flask

_app: Flask | None = None


def use_app(app: Flask | None) -> None:
    """Run jobs in this app (the worker command preloads it before forking)."""
    global _app
    _app = app


@contextmanager
def app_context() -> Iterator[Flask]:
    """Open an app context for one job; build the app on first use in a plain `rq worker`."""
    global _app
    if _app is None:
        from webapp import create_app

        _app = create_app()
    with _app.app_context():
        from webapp.extensions import db

        try:
            yield _app
        finally:
            db.session.remove()
