"""The adapters the contract suite runs, each with the sandbox that speaks its wire format.

To add a provider, append one AdapterCase to ADAPTERS: how to build its simulator, how to build
its adapter against an API base (and an optional transport), and the few facts the contract
allows to differ between providers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from tests.helpers import FakeClock
from webapp.providers.base import EmailProvider, LiftOutcome
from webapp.providers.postmark import PostmarkProvider
from webapp.providers.sendgrid import SendGridProvider
from webapp.sandbox.base import Simulator
from webapp.sandbox.postmark import PostmarkSandbox
from webapp.sandbox.postmark.app import INVALID_TOKEN
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
    # The webhook's proof covers the body (a signature), rather than only the request (Basic auth).
    signs_body: bool = True
    # Event kinds only one path reports: Postmark posts no "processed" (its Messages API shows it),
    # and posts SubscriptionChange records ("unknown") the Messages API does not list.
    poll_only_kinds: frozenset[str] = frozenset()
    webhook_only_kinds: frozenset[str] = frozenset()

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


def _postmark(
    simulator: Simulator,
    api_base: str,
    transport: httpx.BaseTransport | None,
    clock: Callable[[], float],
    credentials: str | None,
) -> EmailProvider:
    assert isinstance(simulator, PostmarkSandbox)
    return PostmarkProvider(
        credentials or "contract-server-token",
        api_base,
        transport=transport,
        clock=clock,
        webhook_username=simulator.webhook_username,
        webhook_password=simulator.webhook_password,
    )


POSTMARK = AdapterCase(
    name="postmark",
    simulator=lambda state_path, clock: PostmarkSandbox(state_path, clock=clock),
    provider=_postmark,
    forbidden_credentials=INVALID_TOKEN,
    # A spam complaint is lifted only by Postmark's support: its API answers Failed.
    spam_lift="provider_request_needed",
    refuses_suppressed_at_send=True,
    signs_body=False,  # Postmark signs nothing: the webhook URL carries HTTP Basic credentials
    poll_only_kinds=frozenset({"processed"}),
    webhook_only_kinds=frozenset({"unknown"}),
)

ADAPTERS: list[AdapterCase] = [SENDGRID, POSTMARK]


@dataclass
class Wire:
    """One adapter talking to its simulator, and the webhook posts the simulator made."""

    case: AdapterCase
    simulator: Simulator
    provider: EmailProvider
    make_provider: Callable[[str | None], EmailProvider]  # with other credentials
    deliver_webhooks: Callable[[], list[tuple[bytes, dict[str, str]]]]
    clock: FakeClock
    closers: list[Callable[[], None]] = field(default_factory=list)
