"""SendGrid's wire format for the sandbox: request validation (`validation`), the v3 API as a WSGI
app (`app`), and the signed Event Webhook (`webhooks`)."""

from webapp.sandbox.sendgrid.app import SendGridSandbox

Simulator = SendGridSandbox  # what the registry in webapp.sandbox looks up

__all__ = ["SendGridSandbox", "Simulator"]
