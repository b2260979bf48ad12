"""The baseline of the poll benchmark: a bare Flask endpoint, served by the same gunicorn settings."""

from flask import Flask

app = Flask(__name__)


@app.get("/")
def bare() -> tuple[str, int]:
    """Nothing at all: the cost of gunicorn and Flask themselves."""
    return "", 204
