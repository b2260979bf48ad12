"""WSGI entry point: `gunicorn wsgi:app`, `flask --app wsgi ...`."""

import gc

from webapp import ConfigError, StartupError, create_app

try:
    app = create_app()
except (ConfigError, StartupError) as error:
    # One clear line, not a traceback: the message says what to fix.
    raise SystemExit(f"error: {error}") from None

# What the imports and the app made lives as long as the process: kept out of the collector's
# sight, it is neither scanned by each full collection nor taken apart object by object at exit,
# which took a web server's worker, the scheduler or `flask up` 0.5 to 0.8 s of CPU after it was
# told to stop (`flask worker` also freezes its heap, before forking jobs: webapp/worker.py).
gc.freeze()
