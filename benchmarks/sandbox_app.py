"""The sandbox (SendGrid's side of the wire) as its own WSGI app, so the benchmarks reach it over HTTP."""

import os

from webapp.providers.sandbox import SandboxServer

app = SandboxServer(os.environ["SANDBOX_STATE_PATH"])
