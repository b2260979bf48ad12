"""The adapters the contract suite runs, each with the sandbox that speaks its wire format.

To add a provider, append one AdapterCase to ADAPTERS: how to build its simulator, how to build
its adapter against an API base (and an optional transport), and the few facts the contract
allows to differ between providers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import httpx

from webapp.providers.base import EmailProvider, LiftOutcome
from webapp.providers.sendgrid import SendGridProvider
from webapp.sandbox.base import Simulator
from webapp.sandbox.sendgrid import SendGridSandbox

# (simulator, api_base, transport or None for real HTTP, clock, credentials or None) -> adapter
ProviderFactory = Callable[
    [Simulator, str, httpx.BaseTransport | None, Callable[[], float], str | None], EmailProvider
]


@dataclass(frozen=True)
class AdapterCase:
    """One provider: its adapter, its simulator, and what the contract lets it do its own way."""

    name: str  # the wire format (webapp.sandbox.WIRE_FORMATS)
    simulator: Callable[[str, Callable[[], float]], Simulator]  # (state path, clock)
    provider: ProviderFactory
    forbidden_credentials: str  # credentials the simulator answers as "not allowed"
    spam_lift: LiftOutcome  # what remove_spam_report answers for a spam report
    # A send to an address on the spam-report list is refused at once (rejected, reject_reason
    # "spam_report", as Postmark's 406) rather than accepted and then dropped (SendGrid).
    refuses_suppressed_at_send: bool = False

    def __str__(self) -> str:
        return self.name


def _sendgrid(
    simulator: Simulator,
    api_base: str,
    transport: httpx.BaseTransport | None,
    clock: Callable[[], float],
    credentials: str | None,
) -> EmailProvider:
    assert isinstance(simulator, SendGridSandbox)
    return SendGridProvider(
        credentials or "SG.contract-key",
        api_base,
        transport=transport,
        clock=clock,
        webhook_public_key=simulator.public_key_b64,
        webhook_tolerance_seconds=600,
    )


SENDGRID = AdapterCase(
    name="sendgrid",
    simulator=lambda state_path, clock: SendGridSandbox(state_path, clock=clock),
    provider=_sendgrid,
    forbidden_credentials="sandbox-forbidden",
    spam_lift="lifted",
)

# POSTMARK (issue 13b): add its AdapterCase here (PostmarkProvider + the postmark simulator).
ADAPTERS: list[AdapterCase] = [SENDGRID]
