"""The sandbox demo: buttons that play the client and the provider's support, and the sandbox's DNS.

Registered only with EMAIL_PROVIDER=sandbox (create_app): beside a real provider none of it exists,
and the pages show its buttons only when it is registered (the template global `sandbox_demo`).
"""

from typing import Any

from flask import Blueprint
from flask.sansio.blueprints import BlueprintSetupState

bp = Blueprint("demo", __name__)


@bp.record_once
def _install(state: BlueprintSetupState) -> None:
    app = state.app
    app.add_template_global(True, "sandbox_demo")
    app.add_template_global(actions.support_desk, "sandbox_support_desk")

    def sandbox_dns(name: bytes, timeout: float = 5) -> Any:
        # Lazily: the key is made on the first check, not at every start.
        from webapp.sandbox.client_mail import sandbox_dns as lookup

        return lookup(app.config)(name, timeout)

    # DKIM keys of the mail the demo writes are published by the sandbox's DNS, not the real one.
    app.extensions["dkim_dns"] = sandbox_dns


from webapp.demo import actions, routes  # noqa: E402,F401
