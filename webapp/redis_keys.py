"""Every Redis key and pub/sub channel the app names, under one prefix (REDIS_KEY_PREFIX).

Several apps (or a staging and a production copy) may then share one Redis without reading each
other's counters, locks or session marks. Flask-Limiter's keys carry the prefix too (create_app);
RQ's own keys carry RQ's prefix, set with the RQ_KEY_PREFIX environment variable (rq reads it when
imported; default "rq").
"""

from __future__ import annotations

from flask import Flask, current_app


def redis_key(*parts: object, app: Flask | None = None) -> str:
    """Return the key (or channel) made of `parts` joined by ":", under the app's prefix."""
    prefix = (app or current_app).config["REDIS_KEY_PREFIX"]
    return prefix + ":".join(str(part) for part in parts)
