"""The provider contract (webapp/providers/base.py), the same for every adapter: each runs against
the sandbox of its own wire format, in-process and over real HTTP. Only the contract's objects and
the simulators' shared test controls are used here, so a new adapter needs no new test."""

from __future__ import annotations

from collections import defaultdict

import pytest
from werkzeug.datastructures import Headers

from tests.contract.adapters import Wire
from tests.helpers import HTML_WITH_LINK, HTML_WITHOUT_LINK, INTAKE_LINK
from webapp import statuses
from webapp.providers.base import OutgoingMessage, PollRef, ProviderEvent, SentRef

# scenario -> the status its events reach (webapp/sandbox/scenarios.py)
EXPECTED = {
    "delivered": "delivered",
    "deferred": "delivered",
    "bounced": "failed",
    "dropped": "failed",
    "machine-open": "open",
    "clicked": "clicked",
    "spam": "spam-report",
    "stuck": "processed",
}


def message(app_id: str, to: str, html: str = HTML_WITH_LINK) -> OutgoingMessage:
    """A message as the product sends one: a text part and an HTML part with a link."""
    return OutgoingMessage(
        app_message_id=app_id,
        to_address=to,
        to_name="Pat Doe",
        from_address="clinic@example.com",
        from_name="Riverside Vets",
        subject="Appointment reminder",
        body_text="See you on Tuesday at 10:00. https://example.com/intake-form",
        body_html=html,
        category="appointment_reminder",
        reply_to="desk@example.com",
    )


def send_every_scenario(wire: Wire) -> dict[str, PollRef]:
    """Send one message per scenario; return the accepted ones' references by scenario, once all
    is visible. A provider that refuses a suppressed address at once refuses the `dropped` one."""
    refs = {}
    for scenario in EXPECTED:
        app_id = f"app-{scenario}"
        result = wire.provider.send(message(app_id, f"pat+{scenario}@example.com"))
        if scenario == "dropped" and wire.case.refuses_suppressed_at_send:
            # Refused at once, saying why in our words: nothing to poll or to hear about later.
            assert (result.outcome, result.reject_reason) == ("rejected", "spam_report"), result
            assert result.error and result.provider_message_id is None
            continue
        assert result.outcome == "accepted", result
        assert result.provider_message_id
        refs[scenario] = PollRef(app_id, result.provider_message_id)
    wire.clock.advance(120)  # every scenario's timeline has run
    return refs


def status_of(events: list[ProviderEvent]) -> str:
    return statuses.current_status([event.kind for event in events]).key


def webhook_events(wire: Wire) -> list[ProviderEvent]:
    """Every event the simulator posts now, each post verified and parsed by the adapter."""
    events = []
    for body, headers in wire.deliver_webhooks():
        verdict = wire.provider.verify_webhook(Headers(headers), body, wire.clock())
        assert verdict.authentic
        assert wire.provider.check_webhook(body) == len(parsed := wire.provider.parse_webhook(body))
        events += parsed
    return events


def test_a_send_is_accepted_with_the_providers_id(wire):
    result = wire.provider.send(message("app-1", "pat+delivered@example.com"))
    assert result.outcome == "accepted"
    assert result.provider_message_id and result.error is None and result.reject_reason is None


def test_an_invalid_address_is_rejected_in_our_words(wire):
    result = wire.provider.send(message("app-1", "not-an-address"))
    assert result.outcome == "rejected"
    assert result.reject_reason == "invalid_address"
    assert result.error  # the provider's own words, kept for display


def test_a_batch_gives_one_result_per_message_in_order(wire):
    batch = [
        message("app-1", "pat+delivered@example.com"),
        message("app-2", "not-an-address"),
        message("app-3", "sam+clicked@example.com"),
    ]
    results = wire.provider.send_batch(batch)
    assert [result.outcome for result in results] == ["accepted", "rejected", "accepted"]
    assert results[0].provider_message_id != results[2].provider_message_id
    assert wire.provider.max_batch >= 1


@pytest.mark.parametrize(
    ("status", "outcome"), [(429, "rate_limited"), (500, "unavailable"), (503, "unavailable")]
)
def test_provider_failures_map_to_outcomes(wire, status, outcome):
    wire.simulator.fail_next(status, retry_after=30)
    result = wire.provider.send(message("app-1", "pat+delivered@example.com"))
    assert result.outcome == outcome
    if outcome == "rate_limited":
        assert result.retry_after is not None and 1 <= result.retry_after <= 60


def test_refused_credentials_are_unauthorized(wire):
    provider = wire.make_provider(wire.case.forbidden_credentials)
    assert provider.send(message("app-1", "pat+delivered@example.com")).outcome == "unauthorized"


def test_every_scenario_reaches_its_status_by_polling(wire):
    refs = send_every_scenario(wire)
    result = wire.provider.poll(list(refs.values()), request_budget=100)
    assert result.error is None and result.rate_limited_for is None
    assert result.covered == {ref.app_message_id for ref in refs.values()}
    reached = {
        scenario: status_of(result.events.get(ref.app_message_id, [])) for scenario, ref in refs.items()
    }
    assert reached == {scenario: EXPECTED[scenario] for scenario in refs}
    if "dropped" in refs:
        (dropped,) = [event for event in result.events["app-dropped"] if event.kind == "dropped"]
        assert dropped.reject_reason == "spam_report" and dropped.reason
    else:
        assert wire.case.refuses_suppressed_at_send


def test_opens_and_clicks_only_where_the_provider_can_track_them(wire):
    """An open needs the HTML part's pixel, a click one of its links (never the text part's)."""
    sent = {
        "link": message("app-link", "pat+clicked@example.com"),
        "no-link": message("app-no-link", "sam+clicked@example.com", html=HTML_WITHOUT_LINK),
        "text": message("app-text", "kim+clicked@example.com", html=""),
    }
    refs = [PollRef(m.app_message_id, wire.provider.send(m).provider_message_id or "") for m in sent.values()]
    wire.clock.advance(120)
    polled = wire.provider.poll(refs, request_budget=100).events
    kinds = {name: {event.kind for event in polled[m.app_message_id]} for name, m in sent.items()}
    assert {"open", "click"} <= kinds["link"]
    assert "open" in kinds["no-link"] and "click" not in kinds["no-link"]
    assert not {"open", "click"} & kinds["text"] and "delivered" in kinds["text"]
    assert [event.url for event in polled["app-link"] if event.kind == "click"] == [INTAKE_LINK]
    pushed = {(event.app_message_id, event.kind) for event in webhook_events(wire)}
    assert ("app-link", "click") in pushed and ("app-no-link", "open") in pushed
    assert not {("app-no-link", "click"), ("app-text", "open"), ("app-text", "click")} & pushed


def test_webhooks_are_authentic_and_tell_what_polling_tells(wire):
    refs = send_every_scenario(wire)
    pushed: dict[str, set[str]] = defaultdict(set)
    for event in webhook_events(wire):
        if event.kind == "dropped":
            assert event.reject_reason == "spam_report"
        if event.kind not in wire.case.webhook_only_kinds:
            pushed[event.app_message_id or ""].add(event.dedupe_key)
    polled = wire.provider.poll(list(refs.values()), request_budget=100).events
    # The same real event from either path has the same key, so it is stored once.
    both = {
        app_id: {event.dedupe_key for event in events if event.kind not in wire.case.poll_only_kinds}
        for app_id, events in polled.items()
    }
    assert dict(pushed) == {app_id: keys for app_id, keys in both.items() if keys}
    assert wire.deliver_webhooks() == []  # each event is posted once


def test_a_tampered_webhook_is_not_authentic(wire):
    send_every_scenario(wire)
    body, headers = wire.deliver_webhooks()[0]
    assert wire.provider.verify_webhook(Headers(headers), body, wire.clock()).authentic
    tampered = body.replace(b"pat+", b"eve+", 1)
    assert tampered != body
    # Only a signature covers the body; Basic credentials prove the sender, not the bytes.
    verdict = wire.provider.verify_webhook(Headers(headers), tampered, wire.clock())
    assert verdict.authentic is not wire.case.signs_body
    assert not wire.provider.verify_webhook(Headers(), body, wire.clock()).authentic


@pytest.mark.parametrize("body", [b"", b"not json", b"{", b"[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]", b"[1, 2]"])
def test_a_malformed_webhook_body_is_a_value_error(wire, body):
    with pytest.raises(ValueError):
        wire.provider.parse_webhook(body)
    with pytest.raises(ValueError):
        wire.provider.check_webhook(body)


def test_the_spam_report_list_and_its_lift(wire):
    send_every_scenario(wire)
    reported = dict(wire.provider.spam_reports())
    assert {"pat+spam@example.com", "pat+dropped@example.com"} <= set(reported)
    lift = wire.provider.remove_spam_report("pat+spam@example.com")
    assert lift.outcome == wire.case.spam_lift
    if lift.outcome == "lifted":
        assert "pat+spam@example.com" not in dict(wire.provider.spam_reports())
        again = wire.provider.send(message("app-again", "pat+spam@example.com"))
        wire.clock.advance(5)
        events = wire.provider.poll([PollRef("app-again", again.provider_message_id or "")], 10).events
        assert "dropped" not in {event.kind for event in events.get("app-again", [])}
    else:
        assert lift.detail  # what support must ask the provider for
        assert "pat+spam@example.com" in dict(wire.provider.spam_reports())


def test_sends_whose_answer_was_lost_are_found(wire):
    wire.simulator.accept_then_fail_next()
    lost = wire.provider.send(message("app-lost", "pat+delivered@example.com"))
    assert lost.outcome == "unavailable"  # it was taken all the same
    assert wire.provider.send(message("app-kept", "sam+delivered@example.com")).outcome == "accepted"
    wire.clock.advance(10)
    refs = [
        SentRef("app-lost", "pat+delivered@example.com"),
        SentRef("app-kept", "sam+delivered@example.com"),
        SentRef("app-never", "kim+delivered@example.com"),
    ]
    result = wire.provider.find_accepted(refs, request_budget=20)
    assert result.error is None
    assert set(result.found) == {"app-lost", "app-kept"}
    assert "app-never" in result.checked  # checked, and not there: never accepted
