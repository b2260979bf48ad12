"""The SendGrid adapter, end to end against the sandbox through httpx.WSGITransport (no mocks of it)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import HTML_WITH_LINK, INTAKE_LINK, RecordingTransport
from tests.helpers import SANDBOX_START as START
from webapp import statuses
from webapp.providers.base import OutgoingMessage, PollRef, ProviderError, SentRef
from webapp.providers.sendgrid import SendGridProvider
from webapp.providers.sendgrid.translate import POLLED_KINDS, WEBHOOK_KINDS, reject_reason_of
from webapp.providers.sendgrid.webhooks import parse_webhook_events
from webapp.reject_reasons import reject_reason_text
from webapp.sandbox.sendgrid import SendGridSandbox

API_BASE = "http://sandbox.test"


class RaisingTransport(httpx.BaseTransport):
    """A network that never answers."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        raise self.error


@pytest.fixture
def transport(sandbox) -> RecordingTransport:
    return RecordingTransport(httpx.WSGITransport(app=sandbox))


@pytest.fixture
def provider(transport, clock):
    provider = SendGridProvider("SG.test-key", API_BASE, transport=transport, clock=clock)
    yield provider
    provider.close()


def provider_with_key(sandbox: SendGridSandbox, key: str) -> SendGridProvider:
    return SendGridProvider(key, API_BASE, transport=httpx.WSGITransport(app=sandbox))


def outgoing(to: str = "delivered@example.com", app_id: str = "msg-1", **changes: str) -> OutgoingMessage:
    fields = {
        "app_message_id": app_id,
        "to_address": to,
        "to_name": "Jane Doe",
        "from_address": "clinic@example.com",
        "from_name": "Riverside Vets",
        "subject": "Appointment reminder",
        "body_text": "See you on Tuesday at 10:00.",
        # As the product sends it: an HTML part with a link (opens and clicks can be tracked).
        "body_html": HTML_WITH_LINK,
        "category": "appointment_reminder",
        **changes,
    }
    return OutgoingMessage(**fields)


def raw_client(sandbox: SendGridSandbox) -> httpx.Client:
    return httpx.Client(
        base_url=API_BASE,
        transport=httpx.WSGITransport(app=sandbox),
        headers={"Authorization": "Bearer SG.test-key"},
    )


def send_and_ref(provider: SendGridProvider, to: str, app_id: str) -> PollRef:
    result = provider.send(outgoing(to, app_id))
    assert result.outcome == "accepted", result
    return PollRef(app_id, result.provider_message_id or "")


# Sending


def test_accepted_send_returns_the_x_message_id(provider, sandbox):
    result = provider.send(outgoing())

    assert result.outcome == "accepted"
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", result.provider_message_id or "")
    assert sandbox.requests_seen("/v3/mail/send") == 1


def test_send_request_has_the_documented_shape(provider, transport):
    provider.send(outgoing(reply_to="desk@example.com"))

    request = transport.requests[-1]
    assert (request.method, request.url.path) == ("POST", "/v3/mail/send")
    assert request.headers["Authorization"] == "Bearer SG.test-key"
    body = json.loads(request.content)
    assert body["personalizations"] == [
        {
            "to": [{"email": "delivered@example.com", "name": "Jane Doe"}],
            "custom_args": {"app_message_id": "msg-1"},
        }
    ]
    assert body["from"] == {"email": "clinic@example.com", "name": "Riverside Vets"}
    assert body["reply_to"] == {"email": "desk@example.com"}
    assert body["subject"] == "Appointment reminder"
    # text/plain first, then text/html: SendGrid refuses another order.
    assert body["content"] == [
        {"type": "text/plain", "value": "See you on Tuesday at 10:00."},
        {"type": "text/html", "value": HTML_WITH_LINK},
    ]
    assert body["categories"] == ["appointment_reminder"]
    assert body["tracking_settings"]["open_tracking"] == {"enable": True}
    # The HTML part's links are tracked, never the text part's (it reads as written).
    assert body["tracking_settings"]["click_tracking"] == {"enable": True, "enable_text": False}
    assert "attachments" not in body


def test_tracking_can_be_turned_off(sandbox):
    transport = RecordingTransport(httpx.WSGITransport(app=sandbox))
    provider = SendGridProvider("k", API_BASE, transport=transport, track_opens=False, track_clicks=False)

    provider.send(outgoing(to_name="", from_name=""))

    body = json.loads(transport.requests[-1].content)
    assert body["tracking_settings"]["open_tracking"] == {"enable": False}
    assert body["tracking_settings"]["click_tracking"] == {"enable": False, "enable_text": False}
    assert body["personalizations"][0]["to"] == [{"email": "delivered@example.com"}]
    assert body["from"] == {"email": "clinic@example.com"}
    assert "reply_to" not in body


def test_the_provider_keeps_our_id_and_gives_it_back(provider, sandbox, clock):
    result = provider.send(outgoing(app_id="01HXYZ-our-id"))
    clock.advance(5)

    with raw_client(sandbox) as client:
        detail = client.get(f"/v3/messages/{result.provider_message_id}.filterdrecv-sandbox-0").json()

    assert detail["unique_args"] == "{'app_message_id': '01HXYZ-our-id'}"


def test_invalid_recipient_is_rejected_with_the_providers_words(provider):
    result = provider.send(outgoing(to="jane.example.com"))

    assert result.outcome == "rejected"
    assert result.error == "Does not contain a valid address. (personalizations.0.to.0.email)"
    assert result.reject_reason == "invalid_address"


def test_rejection_lists_every_problem(provider):
    empty = {"subject": "", "body_text": "", "body_html": ""}
    result = provider.send(outgoing(to="nobody", from_address="clinic", **empty))

    assert result.outcome == "rejected"
    for field in ("personalizations.0.to.0.email", "from.email", "subject", "content.0.value"):
        assert f"({field})" in (result.error or "")


def test_too_large_is_rejected_without_a_request(provider, sandbox):
    result = provider.send(outgoing(body_text="x" * 30_000_001))

    assert result.outcome == "rejected"
    assert "too large for SendGrid" in (result.error or "")
    assert result.reject_reason == "other"  # the message, not the address
    assert sandbox.requests_seen("/v3/mail/send") == 0


def test_sendgrids_own_413_is_a_rejection_too():
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(413, json={"errors": [{"message": "content too large", "field": None}]})

    provider = SendGridProvider("k", API_BASE, transport=httpx.MockTransport(answer))
    result = provider.send(outgoing())

    assert (result.outcome, result.error, result.reject_reason) == ("rejected", "content too large", "other")


@pytest.mark.parametrize(
    ("key", "error"), [("", "authorization required"), ("sandbox-forbidden", "access forbidden")]
)
def test_bad_keys_are_unauthorized(sandbox, key, error):
    result = provider_with_key(sandbox, key).send(outgoing())

    assert result.outcome == "unauthorized"
    assert result.error == error


def test_rate_limit_waits_until_the_reset_header(provider, sandbox):
    sandbox.fail_next(429, retry_after=42)

    result = provider.send(outgoing())

    assert result.outcome == "rate_limited"
    assert result.retry_after == 42
    assert result.error == "too many requests"


def test_rate_limit_without_a_hint_waits_a_minute(provider, sandbox):
    sandbox.fail_next(429)

    assert provider.send(outgoing()).retry_after == 60


def test_retry_after_header_wins_over_the_reset_time():
    def answer(request: httpx.Request) -> httpx.Response:
        headers = {"Retry-After": "7", "X-RateLimit-Reset": str(int(START) + 3600)}
        return httpx.Response(429, headers=headers, json={"errors": [{"message": "too many requests"}]})

    provider = SendGridProvider("k", API_BASE, transport=httpx.MockTransport(answer), clock=lambda: START)

    assert provider.send(outgoing()).retry_after == 7


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_are_unavailable(provider, sandbox, status):
    sandbox.fail_next(status, path_prefix="/v3/mail/send")

    result = provider.send(outgoing())

    assert result.outcome == "unavailable"
    assert result.error == "internal error"
    assert provider.send(outgoing()).outcome == "accepted"


def test_a_batch_keeps_each_messages_own_outcome_in_order(provider, sandbox, transport):
    messages = [outgoing(app_id=f"b-{n}") for n in range(12)]
    messages[5] = outgoing(to="not-an-address", app_id="b-5")
    messages[9] = outgoing(app_id="b-9", subject="")

    results = provider.send_batch(messages)

    outcomes = [result.outcome for result in results]
    assert outcomes == ["accepted"] * 5 + ["rejected"] + ["accepted"] * 3 + ["rejected"] + ["accepted"] * 2
    # One request per message (a Mail Send body is the same for all its recipients), each its own.
    assert len(transport.requests) == 12
    sent = {
        json.loads(r.content)["personalizations"][0]["custom_args"]["app_message_id"]
        for r in transport.requests
    }
    assert sent == {f"b-{n}" for n in range(12)}
    assert len({result.provider_message_id for result in results if result.outcome == "accepted"}) == 10


def test_a_429_on_the_first_send_of_a_batch_sends_nothing_more(provider, sandbox, transport):
    sandbox.fail_next(429, path_prefix="/v3/mail/send", retry_after=42)

    results = provider.send_batch([outgoing(app_id=f"r-{n}") for n in range(10)])

    assert len(transport.requests) == 1
    assert {result.outcome for result in results} == {"rate_limited"}
    assert {result.retry_after for result in results} == {42}
    assert all(result.error.startswith("not sent") for result in results[1:])


def test_a_refused_key_is_learned_by_one_request_of_a_batch(sandbox):
    recording = RecordingTransport(httpx.WSGITransport(app=sandbox))
    provider = SendGridProvider("sandbox-forbidden", API_BASE, transport=recording)

    results = provider.send_batch([outgoing(app_id=f"k-{n}") for n in range(10)])

    assert len(recording.requests) == 1
    assert {result.outcome for result in results} == {"unauthorized"}


def test_a_batch_starts_no_request_after_its_time_is_up(sandbox, clock):
    class Slow(httpx.BaseTransport):
        """The first request takes 11 s of the test's clock, the others none."""

        def __init__(self) -> None:
            self.inner = httpx.WSGITransport(app=sandbox)
            self.count = 0

        def handle_request(self, request: httpx.Request) -> httpx.Response:
            self.count += 1
            if self.count == 1:
                clock.advance(11)
            return self.inner.handle_request(request)

    slow = Slow()
    provider = SendGridProvider("k", API_BASE, transport=slow, clock=clock, timeout=10)

    results = provider.send_batch([outgoing(app_id=f"t-{n}") for n in range(30)])

    assert slow.count == 1
    assert results[0].outcome == "accepted"
    assert {result.outcome for result in results[1:]} == {"not_sent"}
    # Well within its time, a batch sends everything.
    assert {
        result.outcome for result in provider.send_batch([outgoing(app_id="u-1"), outgoing(app_id="u-2")])
    } == {"accepted"}


def test_a_lost_answer_is_found_again_by_our_id(provider, sandbox, clock):
    sandbox.accept_then_fail_next()

    result = provider.send(outgoing(app_id="lost-1"))
    clock.advance(2)
    answer = provider.find_accepted(
        [SentRef("lost-1", "delivered@example.com"), SentRef("never-sent", "other@example.com")], 1
    )

    assert result.outcome == "unavailable"
    found = answer.found["lost-1"]
    assert found is not None and re.fullmatch(r"[A-Za-z0-9_-]{22}", found)
    assert "never-sent" not in answer.found
    assert answer.checked == {"lost-1", "never-sent"}
    assert answer.requests_made == 1


def test_find_accepted_sees_nothing_before_the_provider_processed_it(provider, clock):
    provider.send(outgoing(app_id="new-1"))
    refs = [SentRef("new-1", "delivered@example.com")]

    assert provider.find_accepted(refs, 1).found == {}
    clock.advance(2)
    assert "new-1" in provider.find_accepted(refs, 1).found


def test_find_accepted_asks_about_many_in_one_request_telling_them_apart_by_address(
    provider, sandbox, clock, transport
):
    refs = [SentRef(f"id-{n}", f"client{n}+delivered@example.com") for n in range(40)]
    for ref in refs[::2]:
        provider.send(outgoing(ref.to_address, ref.app_message_id))
    # Two emails to one address cannot be told apart in one answer: they go in two requests.
    refs += [SentRef("same-a", "shared@example.com"), SentRef("same-b", "shared@example.com")]
    provider.send(outgoing("shared@example.com", "same-b"))
    clock.advance(5)
    transport.requests.clear()

    answer = provider.find_accepted(refs, 5)

    assert answer.requests_made == 2 and len(transport.requests) == 2
    assert set(answer.found) == {ref.app_message_id for ref in refs[:40:2]} | {"same-b"}
    assert answer.checked == {ref.app_message_id for ref in refs}
    one_request = provider.find_accepted(refs, 1)
    assert one_request.checked == {ref.app_message_id for ref in refs} - {"same-b"}


@pytest.mark.parametrize(
    "error", [httpx.ReadTimeout("timed out"), httpx.ConnectError("refused"), httpx.RemoteProtocolError("eof")]
)
def test_no_answer_is_in_doubt(error):
    provider = SendGridProvider("k", API_BASE, transport=RaisingTransport(error))

    result = provider.send(outgoing())

    assert result.outcome == "in_doubt"
    assert type(error).__name__ in (result.error or "")


def test_find_accepted_asks_for_the_details_of_a_message_whose_address_reads_differently(sandbox, clock):
    class OtherSpelling(httpx.BaseTransport):
        """The provider lists the recipient's address spelled otherwise than we stored it."""

        def __init__(self) -> None:
            self.inner = httpx.WSGITransport(app=sandbox)

        def handle_request(self, request: httpx.Request) -> httpx.Response:
            response = self.inner.handle_request(request)
            if request.url.path != "/v3/messages":
                return response
            response.read()
            listed = response.json()
            for item in listed["messages"]:
                item["to_email"] = "xn--" + item["to_email"]
            return httpx.Response(200, json=listed)

    provider = SendGridProvider("SG.test-key", API_BASE, transport=OtherSpelling(), clock=clock)
    provider.send(outgoing("jane@example.com", "odd-1"))
    clock.advance(5)
    refs = [SentRef("odd-1", "jane@example.com"), SentRef("other", "bob@example.com")]

    answer = provider.find_accepted(refs, 3)
    starved = provider.find_accepted(refs, 1)

    assert set(answer.found) == {"odd-1"} and answer.checked == {"odd-1", "other"}
    assert answer.requests_made == 2
    assert starved.found == {} and starved.checked == frozenset()  # "not found" would prove nothing


def test_find_accepted_reports_failures(provider, sandbox):
    refs = [SentRef("msg-1", "delivered@example.com")]
    sandbox.fail_next(429, retry_after=30)
    rate_limited = provider.find_accepted(refs, 3)
    sandbox.fail_next(500)
    broken = provider.find_accepted(refs, 3)
    no_answer = SendGridProvider("k", API_BASE, transport=RaisingTransport(httpx.ReadTimeout("t")))

    assert rate_limited.rate_limited_for == 30 and rate_limited.checked == frozenset()
    assert broken.error and broken.rate_limited_for is None and broken.checked == frozenset()
    assert "ReadTimeout" in (no_answer.find_accepted(refs, 1).error or "")


# Polling

SCENARIO_KINDS = {
    "delivered": ["processed", "delivered"],
    "deferred": ["processed", "deferred", "deferred", "delivered"],
    "bounced": ["processed", "bounce"],
    "dropped": ["processed", "dropped"],
    "machine-open": ["processed", "delivered", "open"],
    "clicked": ["processed", "delivered", "open", "click"],
    "spam": ["processed", "delivered", "open", "spamreport"],
    "stuck": ["processed"],
}


@pytest.mark.parametrize(("scenario", "kinds"), SCENARIO_KINDS.items())
def test_each_scenario_reaches_its_events(provider, clock, scenario, kinds):
    ref = send_and_ref(provider, f"jane+{scenario}@example.com", "msg-1")
    clock.advance(120)

    result = provider.poll([ref], request_budget=5)

    events = sorted(result.events["msg-1"], key=lambda event: event.occurred_at)
    assert [event.kind for event in events] == kinds
    assert result.requests_made == 2
    for event in events:
        assert event.app_message_id == "msg-1"
        assert event.recipient == f"jane+{scenario}@example.com"
        # The send request's id (the X-Message-Id), not the per-recipient msg_id it starts.
        assert event.provider_message_id == ref.provider_message_id
        assert event.occurred_at.tzinfo is not None and event.occurred_at.utcoffset().total_seconds() == 0


@pytest.mark.parametrize("scenario", ["machine-open", "clicked", "spam"])
def test_a_text_only_email_reports_no_open_and_no_click(provider, clock, scenario):
    """SendGrid's open is a pixel in the HTML part, its click a rewritten HTML link: without one,
    the scenario's open and click never come, the rest of it does."""
    result = provider.send(outgoing(f"jane+{scenario}@example.com", "msg-1", body_html=""))
    clock.advance(120)

    events = provider.poll([PollRef("msg-1", result.provider_message_id or "")], request_budget=5).events
    kinds = [event.kind for event in sorted(events["msg-1"], key=lambda event: event.occurred_at)]
    assert kinds == [kind for kind in SCENARIO_KINDS[scenario] if kind not in ("open", "click")]


def test_polled_events_carry_their_details(provider, clock):
    refs = [
        send_and_ref(provider, "deferred@example.com", "deferred-1"),
        send_and_ref(provider, "clicked@example.com", "clicked-1"),
        send_and_ref(provider, "bounced@example.com", "bounced-1"),
        send_and_ref(provider, "dropped@example.com", "dropped-1"),
    ]
    clock.advance(120)

    events = provider.poll(refs, request_budget=10).events

    deferrals = [event for event in events["deferred-1"] if event.kind == "deferred"]
    assert [(event.attempt, event.reason) for event in deferrals] == [
        (1, "421 4.7.0 Try again later"),
        (2, "421 4.7.0 Try again later"),
    ]
    assert [event.url for event in events["clicked-1"] if event.kind == "click"] == [INTAKE_LINK]
    bounce = next(event for event in events["bounced-1"] if event.kind == "bounce")
    assert bounce.reason == "550 5.1.1 The email account that you tried to reach does not exist"
    drop = next(event for event in events["dropped-1"] if event.kind == "dropped")
    assert drop.reason == "Spam Reporting Address"


def test_events_appear_as_time_passes(provider, clock):
    ref = send_and_ref(provider, "deferred@example.com", "msg-1")

    seen = []
    for seconds in (0, 1, 2, 5, 8):
        clock.now = START + seconds
        result = provider.poll([ref], request_budget=5)
        seen.append(len(result.events.get("msg-1", [])))

    assert seen == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("budget", [0, 1, 2, 3, 4, 5, 9])
def test_polling_stays_within_its_budget(provider, sandbox, clock, budget):
    refs = [send_and_ref(provider, f"client{i}+delivered@example.com", f"msg-{i}") for i in range(4)]
    clock.advance(60)
    before = sandbox.requests_seen("/v3/messages")

    result = provider.poll(refs, request_budget=budget)

    assert result.requests_made == min(budget, 5)
    assert sandbox.requests_seen("/v3/messages") - before == result.requests_made
    assert len(result.events) == max(0, min(budget, 5) - 1)
    assert result.rate_limited_for is None and result.error is None


def test_polling_asks_about_the_first_refs_first(provider, clock):
    refs = [send_and_ref(provider, f"client{i}+delivered@example.com", f"msg-{i}") for i in range(4)]
    clock.advance(60)

    result = provider.poll(refs, request_budget=3)

    assert set(result.events) == {"msg-0", "msg-1"}


def test_rate_limited_list_stops_polling(provider, sandbox, clock):
    ref = send_and_ref(provider, "delivered@example.com", "msg-1")
    clock.advance(60)
    sandbox.fail_next(429, path_prefix="/v3/messages", retry_after=30)

    result = provider.poll([ref], request_budget=5)

    assert result.events == {}
    assert result.requests_made == 1
    assert result.rate_limited_for == 30


def test_rate_limited_detail_keeps_what_was_fetched(provider, sandbox, clock):
    first = send_and_ref(provider, "delivered@example.com", "msg-1")
    second = send_and_ref(provider, "clicked@example.com", "msg-2")
    clock.advance(60)
    sandbox.fail_next(429, path_prefix=f"/v3/messages/{second.provider_message_id}")

    result = provider.poll([first, second], request_budget=5)

    assert set(result.events) == {"msg-1"}
    assert result.requests_made == 3
    assert result.rate_limited_for == 60


def test_a_broken_activity_api_is_reported_not_raised(provider, sandbox, clock):
    ref = send_and_ref(provider, "delivered@example.com", "msg-1")
    clock.advance(60)
    sandbox.fail_next(503, path_prefix="/v3/messages")

    result = provider.poll([ref], request_budget=5)

    assert result.events == {}
    assert result.rate_limited_for is None
    assert "503" in (result.error or "")


def test_polled_messages_are_matched_by_x_message_id_without_unique_args():
    detail = {
        "msg_id": "XMSGID.filterdrecv-1",
        "to_email": "jane@example.com",
        "unique_args": "Null",
        "events": [
            {"event_name": "delivered", "processed": "2026-01-02T10:00:05Z"},
            {"event_name": "group_unsubscribe", "processed": "2026-01-02T10:01:00Z"},
            {"event_name": "something_new", "processed": "2026-01-02T10:02:00Z"},
            {"event_name": "opened", "processed": "not a time"},
        ],
    }

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v3/messages":
            return httpx.Response(200, json={"messages": [{"msg_id": detail["msg_id"]}]})
        return httpx.Response(200, json=detail)

    provider = SendGridProvider("k", API_BASE, transport=httpx.MockTransport(answer))

    result = provider.poll([PollRef("ours-1", "XMSGID")], request_budget=5)

    events = result.events["ours-1"]
    assert [event.kind for event in events] == ["delivered", "group_unsubscribe", "unknown"]
    assert events[0].occurred_at == datetime(2026, 1, 2, 10, 0, 5, tzinfo=UTC)
    assert all(event.app_message_id == "ours-1" for event in events)


def test_poll_with_nothing_to_ask_makes_no_request(provider, sandbox):
    assert provider.poll([], request_budget=5).requests_made == 0
    assert sandbox.requests_seen("/v3/") == 0


# Spam reports


def test_spam_reports_list_the_dropped_and_the_reporting_addresses(provider, clock):
    provider.send(outgoing("dropped@example.com", "msg-1"))
    provider.send(outgoing("spam@example.com", "msg-2"))

    assert [address for address, _ in provider.spam_reports()] == ["dropped@example.com"]
    clock.advance(60)
    reports = dict(provider.spam_reports())

    assert set(reports) == {"dropped@example.com", "spam@example.com"}
    assert reports["spam@example.com"] == datetime.fromtimestamp(START + 20, UTC)
    since = datetime.fromtimestamp(START + 10, UTC)
    assert [address for address, _ in provider.spam_reports(since=since)] == ["spam@example.com"]


def test_an_address_on_the_spam_list_is_dropped_whatever_its_scenario(provider, clock):
    provider.send(outgoing("spam@example.com", "msg-1"))
    clock.advance(60)

    ref = send_and_ref(provider, "spam@example.com", "msg-2")
    clock.advance(60)

    assert [event.kind for event in provider.poll([ref], 5).events["msg-2"]] == ["processed", "dropped"]


def test_spam_reports_are_read_page_by_page(provider, sandbox, clock):
    personalizations = [{"to": [{"email": f"client{i}+dropped@example.com"}]} for i in range(501)]
    body = {
        "personalizations": personalizations,
        "from": {"email": "clinic@example.com"},
        "subject": "Hello",
        "content": [{"type": "text/plain", "value": "Hello"}],
    }
    with raw_client(sandbox) as client:
        assert client.post("/v3/mail/send", json=body).status_code == 202
    before = sandbox.requests_seen("/v3/suppression/spam_reports")

    reports = provider.spam_reports()

    assert len({address for address, _ in reports}) == 501
    assert sandbox.requests_seen("/v3/suppression/spam_reports") - before == 2


def test_removing_a_spam_report_lets_later_sends_through(provider, clock):
    first = send_and_ref(provider, "dropped@example.com", "msg-1")
    clock.advance(60)
    assert [event.kind for event in provider.poll([first], 5).events["msg-1"]] == ["processed", "dropped"]

    provider.remove_spam_report("Dropped@Example.com")

    assert provider.spam_reports() == []
    second = send_and_ref(provider, "dropped@example.com", "msg-2")
    clock.advance(60)
    assert [event.kind for event in provider.poll([second], 5).events["msg-2"]] == ["processed", "delivered"]


def test_removing_a_spam_report_can_fail(provider, sandbox):
    sandbox.fail_next(500, path_prefix="/v3/suppression/spam_reports/")

    with pytest.raises(ProviderError, match="internal error"):
        provider.remove_spam_report("jane@example.com")


def test_spam_reports_raise_when_the_provider_cannot_answer(provider, sandbox):
    sandbox.fail_next(429, retry_after=15)

    with pytest.raises(ProviderError) as raised:
        provider.spam_reports()

    assert raised.value.retry_after == 15


# Event webhook parsing


def webhook_body(*events: dict) -> bytes:
    return (json.dumps(list(events)) + "\r\n").encode()


def test_webhook_events_are_mapped_to_our_kinds():
    common = {"email": "jane@example.com", "sg_message_id": "X.f-1", "app_message_id": "msg-1"}
    body = webhook_body(
        {**common, "event": "processed", "timestamp": 1767348000},
        {**common, "event": "deferred", "timestamp": 1767348001, "attempt": "3", "response": "421 later"},
        {**common, "event": "delivered", "timestamp": 1767348002, "response": "250 OK"},
        {**common, "event": "bounce", "timestamp": 1767348003, "reason": "550 no", "type": "blocked"},
        {**common, "event": "dropped", "timestamp": 1767348004, "reason": "Bounced Address"},
        {**common, "event": "open", "timestamp": 1767348005, "sg_machine_open": True},
        {**common, "event": "open", "timestamp": 1767348006, "sg_machine_open": False},
        {**common, "event": "click", "timestamp": 1767348007, "url": "https://example.com/a"},
        {**common, "event": "spamreport", "timestamp": 1767348008},
        {**common, "event": "group_unsubscribe", "timestamp": 1767348009, "url": "https://x/unsub"},
        {**common, "event": "account_status_change", "timestamp": 1767348010, "type": "compliance_suspend"},
    )

    events = parse_webhook_events(body)

    assert [event.kind for event in events] == [
        "processed",
        "deferred",
        "delivered",
        "bounce",
        "dropped",
        "open",
        "open",
        "click",
        "spamreport",
        "group_unsubscribe",
        "unknown",
    ]
    assert events[1].attempt == 3 and events[1].reason == "421 later"
    assert events[2].reason == "250 OK"
    assert events[3].reason == "550 no" and events[3].raw["type"] == "blocked"
    assert events[4].reason == "Bounced Address"
    assert (events[5].machine, events[6].machine) == (True, False)
    assert events[7].url == "https://example.com/a"
    assert events[9].url is None
    assert all(event.app_message_id == "msg-1" for event in events)
    assert all(event.provider_message_id == "X" and event.recipient == "jane@example.com" for event in events)
    assert events[0].occurred_at == datetime.fromtimestamp(1767348000, UTC)
    assert events[0].raw["event"] == "processed"


@pytest.mark.parametrize("timestamp", [1767348000, 1767348000.75, "1767348000", 1767348000123])
def test_webhook_timestamps_in_any_documented_form(timestamp):
    (event,) = parse_webhook_events(webhook_body({"event": "processed", "timestamp": timestamp}))

    assert int(event.occurred_at.timestamp()) == 1767348000
    assert event.occurred_at.tzinfo is UTC


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"\xff\xfe",
        b'{"event": "processed", "timestamp": 1}',
        b"[1, 2]",
        b'[{"timestamp": 1767348000}]',
        b'[{"event": "processed"}]',
        b'[{"event": "processed", "timestamp": "yesterday"}]',
        b'[{"event": "processed", "timestamp": true}]',
        b'[{"event": "", "timestamp": 1767348000}]',
    ],
)
def test_malformed_webhook_bodies_are_refused(body):
    with pytest.raises(ValueError):
        parse_webhook_events(body)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
WEBHOOK_ITEMS = st.fixed_dictionaries(
    {},
    optional={
        "event": st.sampled_from(sorted(WEBHOOK_KINDS)) | JSON_VALUES,
        "timestamp": st.integers(-(10**15), 10**15) | st.floats() | st.text() | JSON_VALUES,
        "attempt": JSON_VALUES,
        "sg_machine_open": JSON_VALUES,
        "app_message_id": JSON_VALUES,
        "url": JSON_VALUES,
    },
)


@settings(max_examples=150, deadline=None)
@given(items=st.lists(WEBHOOK_ITEMS | JSON_VALUES, max_size=5))
def test_webhook_parsing_refuses_with_value_error_only(items):
    body = json.dumps(items).encode()
    try:
        events = parse_webhook_events(body)
    except ValueError:
        return
    assert len(events) == len(items)
    assert all(event.kind in statuses.EVENT_KINDS and event.occurred_at.tzinfo is UTC for event in events)
    assert all(isinstance(event.dedupe_key, str) for event in events)


def test_an_empty_batch_is_no_events():
    assert parse_webhook_events(b"[]\r\n") == []


def test_every_mapped_kind_is_one_of_ours():
    assert set(POLLED_KINDS.values()) <= set(statuses.EVENT_KINDS)
    assert set(WEBHOOK_KINDS) <= set(statuses.EVENT_KINDS)


@pytest.mark.parametrize(
    ("reason", "ours", "text"),
    [
        ("Spam Reporting Address", "spam_report", "the client reported an earlier email as spam"),
        ("Bounced Address", "bounced_address", "an earlier email to this address bounced"),
        ("Invalid", "invalid_address", "the address is not valid"),
        ("Invalid Address", "invalid_address", "the address is not valid"),
        ("Unsubscribed Address", "unsubscribed", "the client unsubscribed"),
        ("Spam Content", "other", "Spam Content"),
        (None, "other", "the email provider gave no reason"),
    ],
)
def test_drop_reasons_in_our_words_with_sendgrids_text_kept(reason, ours, text):
    body = webhook_body(
        {"event": "dropped", "timestamp": 1767348004, **({"reason": reason} if reason else {})}
    )
    (event,) = parse_webhook_events(body)
    assert (event.reject_reason, event.reason) == (ours, reason)
    assert reject_reason_of(reason) == ours
    assert reject_reason_text(event.reject_reason, event.reason) == text


_json_scalars = st.none() | st.booleans() | st.integers(-(10**16), 10**16) | st.text(max_size=5)
_event_like = st.dictionaries(
    st.sampled_from(["event", "timestamp", "email", "app_message_id", "url", "attempt"]),
    _json_scalars | st.lists(_json_scalars, max_size=2),
    max_size=6,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_event_like | _json_scalars, max_size=4) | _json_scalars | _event_like)
def test_the_routes_check_accepts_exactly_what_the_job_can_parse(document):
    """The route stores what check_webhook_body accepts and the job parses it later: they must agree."""
    from webapp.providers.sendgrid.webhooks import check_webhook_body

    body = json.dumps(document).encode()
    try:
        parsed = parse_webhook_events(body)
    except ValueError:
        with pytest.raises(ValueError):
            check_webhook_body(body)
    else:
        assert check_webhook_body(body) == len(parsed)
