"""The sandbox (SendGrid's side of the wire) as its own WSGI app, so the benchmarks reach it over HTTP."""

import os

from webapp.sandbox.sendgrid import SendGridSandbox

app = SendGridSandbox(os.environ["SANDBOX_STATE_PATH"])
