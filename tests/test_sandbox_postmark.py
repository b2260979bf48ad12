"""The Postmark wire-format sandbox, through the real Postmark adapter (httpx.WSGITransport), on a
clock the test moves; its answers and webhook records have the shapes of Postmark's documented
examples (tests/fixtures/postmark/)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.helpers import HTML_WITH_LINK, INTAKE_LINK, FakeClock, RecordingTransport
from webapp import statuses
from webapp.providers.base import OutgoingMessage, PollRef, SentRef
from webapp.providers.postmark import PostmarkProvider
from webapp.sandbox.postmark import PostmarkSandbox

FIXTURES = Path(__file__).parent / "fixtures" / "postmark"
API_BASE = "http://postmark-sandbox.test"
SCENARIOS = ["delivered", "deferred", "bounced", "machine-open", "clicked", "spam", "spam-filtered", "stuck"]


def documented_keys(name: str) -> set[str]:
    document = json.loads((FIXTURES / name).read_text())
    body = document.get("_body", document)
    if isinstance(body, list):
        body = body[0]
    return {key for key in body if not key.startswith("_")}


@pytest.fixture
def postmark_sandbox(tmp_path, clock: FakeClock) -> PostmarkSandbox:
    return PostmarkSandbox(str(tmp_path / "sandbox.sqlite3"), clock=clock)


@pytest.fixture
def transport(postmark_sandbox) -> RecordingTransport:
    return RecordingTransport(httpx.WSGITransport(app=postmark_sandbox))


@pytest.fixture
def provider(postmark_sandbox, transport, clock):
    provider = PostmarkProvider(
        "server-token",
        API_BASE,
        transport=transport,
        clock=clock,
        webhook_username=postmark_sandbox.webhook_username,
        webhook_password=postmark_sandbox.webhook_password,
    )
    yield provider
    provider.close()


def outgoing(to: str, app_id: str) -> OutgoingMessage:
    return OutgoingMessage(
        app_message_id=app_id,
        to_address=to,
        to_name="Jane Doe",
        from_address="no-reply@clinic.example",
        from_name="Clinic A",
        subject="Reminder",
        body_text="See you",
        body_html=HTML_WITH_LINK,  # as the product sends it: opens and clicks can be tracked
        category="appointment_reminder",
    )


def collect(posts: list[tuple[bytes, dict[str, str]]]):
    def post(body: bytes, headers: dict[str, str]) -> int:
        posts.append((body, headers))
        return 200

    return post


def test_every_scenario_reaches_its_status_by_polling_and_by_webhooks_alike(
    provider, postmark_sandbox, clock
):
    sent = {}
    for scenario in SCENARIOS:
        result = provider.send(outgoing(f"jane+{scenario}@example.com", f"msg-{scenario}"))
        assert result.outcome == "accepted", (scenario, result)
        sent[scenario] = result.provider_message_id
    clock.advance(30)
    polled = provider.poll([PollRef(f"msg-{s}", sent[s]) for s in SCENARIOS], request_budget=50)
    assert polled.covered == frozenset(f"msg-{s}" for s in SCENARIOS)
    wanted = {
        "delivered": statuses.DELIVERED,
        "deferred": statuses.DELIVERED,
        "bounced": statuses.FAILED,
        "machine-open": statuses.OPEN,
        "clicked": statuses.CLICKED,
        "spam": statuses.SPAM_REPORT,
        "spam-filtered": statuses.OPEN,  # the late SpamNotification keeps the status
        "stuck": statuses.PROCESSED,
    }
    for scenario, status in wanted.items():
        kinds = [event.kind for event in polled.events[f"msg-{scenario}"]]
        assert statuses.current_status(kinds) == status, (scenario, kinds)
    # Polling reads the bounce record's Type: a spam notice, not a failure.
    filtered = polled.events["msg-spam-filtered"]
    assert [event.kind for event in filtered] == ["processed", "delivered", "open", "spam_filtered"]
    assert filtered[-1].reason.startswith("The message was delivered, but was either blocked")

    posts: list[tuple[bytes, dict[str, str]]] = []
    assert postmark_sandbox.deliver_webhooks(collect(posts)) > 0
    by_message: dict[str, set[str]] = {}
    for body, headers in posts:
        assert provider.verify_webhook(headers, body, now=clock()).authentic
        for event in provider.parse_webhook(body):  # one record per POST
            by_message.setdefault(event.app_message_id, set()).add(event.dedupe_key)
    for scenario in set(SCENARIOS) - {"stuck"}:  # stuck: only "processed", which Postmark never posts
        polled_keys = {e.dedupe_key for e in polled.events[f"msg-{scenario}"] if e.kind != "processed"}
        # What the webhook says, polling says the same way (the events deduplicate).
        assert polled_keys and polled_keys <= by_message.get(f"msg-{scenario}", set()), scenario
    assert postmark_sandbox.deliver_webhooks(collect(posts)) == 0  # each event once


def test_webhook_records_have_the_documented_shapes_and_need_the_credentials(
    provider, postmark_sandbox, clock
):
    provider.send(outgoing("jane+spam@example.com", "msg-1"))
    provider.send(outgoing("jane+bounced@example.com", "msg-2"))
    provider.send(outgoing("jane+deferred@example.com", "msg-3"))
    clock.advance(30)
    posts: list[tuple[bytes, dict[str, str]]] = []
    postmark_sandbox.deliver_webhooks(collect(posts))
    records = [json.loads(body) for body, _ in posts]
    documented = {
        "Delivery": "webhook_delivery.json",
        "Bounce": "webhook_bounce.json",
        "SpamComplaint": "webhook_spam_complaint.json",
        "Open": "webhook_open.json",
        "Click": "webhook_click.json",
        "SubscriptionChange": "webhook_subscription_change.json",
    }
    seen = set()
    for record in records:
        seen.add(record["RecordType"])
        missing = documented_keys(documented[record["RecordType"]]) - set(record) - {"Content"}
        assert not missing, (record["RecordType"], missing)
    assert {"Delivery", "Bounce", "SpamComplaint", "Open", "SubscriptionChange"} <= seen
    body, headers = posts[0]
    assert headers["Authorization"].startswith("Basic ")
    assert not provider.verify_webhook(
        {**headers, "Authorization": "Basic eDp5"}, body, now=clock()
    ).authentic


def test_a_suppressed_address_is_refused_at_send_time_with_why(provider, clock):
    result = provider.send(outgoing("marco+dropped@example.com", "msg-1"))
    assert (result.outcome, result.reject_reason) == ("rejected", "spam_report")
    assert "Found inactive addresses: marco+dropped@example.com" in result.error
    assert provider.spam_reports() and provider.spam_reports()[0][0] == "marco+dropped@example.com"
    provider.send(outgoing("ann+bounced@example.com", "msg-2"))
    clock.advance(30)
    again = provider.send(outgoing("ann+bounced@example.com", "msg-3"))
    assert (again.outcome, again.reject_reason) == ("rejected", "bounced_address")


def test_a_batch_answers_by_position_with_failed_items_as_documented(provider, transport):
    messages = [
        outgoing("a+delivered@example.com", "m1"),
        outgoing("b+dropped@example.com", "m2"),
        outgoing("not-an-address", "m3"),
        outgoing("c+clicked@example.com", "m4"),
    ]
    results = provider.send_batch(messages)
    assert [r.outcome for r in results] == ["accepted", "rejected", "rejected", "accepted"]
    assert (results[1].reject_reason, results[2].reject_reason) == ("spam_report", "invalid_address")
    # The adapter's first request carries one message; the second the other three.
    batches = [request for request in transport.requests if request.url.path == "/email/batch"]
    first, second = (json.loads(transport.inner.handle_request(request).read()) for request in batches)
    assert set(first[0]) == documented_keys("batch_response.json")
    assert set(second[0]) == {"ErrorCode", "Message"}  # a failed item names no recipient


def test_find_accepted_searches_metadata_and_details_have_the_documented_fields(provider, transport, clock):
    accepted = provider.send(outgoing("jane+clicked@example.com", "msg-1"))
    clock.advance(30)
    answer = provider.find_accepted([SentRef("msg-1", "x"), SentRef("msg-2", "y")], request_budget=5)
    assert answer.found == {"msg-1": accepted.provider_message_id}
    assert answer.checked == frozenset({"msg-1", "msg-2"})
    details = httpx.Client(transport=transport, base_url=API_BASE).get(
        f"/messages/outbound/{accepted.provider_message_id}/details",
        headers={"X-Postmark-Server-Token": "t", "Accept": "application/json"},
    )
    body = details.json()
    assert documented_keys("messages_outbound_details.json") - set(body) == set()
    assert {event["Type"] for event in body["MessageEvents"]} == {"Delivered", "Opened", "LinkClicked"}
    assert body["TextBody"] == "See you"  # what it received, as Postmark keeps it


def test_a_spam_complaint_cannot_be_deleted_but_postmarks_support_can_reactivate_it(
    provider, postmark_sandbox, clock
):
    provider.send(outgoing("jane+spam@example.com", "msg-1"))
    clock.advance(30)
    assert [address for address, _ in provider.spam_reports()] == ["jane+spam@example.com"]
    refused = provider.remove_spam_report("jane+spam@example.com")
    assert refused.outcome == "provider_request_needed" and "required authority" in refused.detail
    assert provider.send(outgoing("jane+spam@example.com", "msg-2")).outcome == "rejected"
    assert postmark_sandbox.reactivate("jane+spam@example.com")
    assert provider.spam_reports() == []
    assert provider.remove_spam_report("jane+spam@example.com").outcome == "lifted"  # nothing left: Deleted
    assert provider.send(outgoing("jane+spam@example.com", "msg-3")).outcome == "accepted"


@pytest.mark.parametrize(
    ("headers", "body", "status", "code"),
    [
        ({"X-Postmark-Server-Token": ""}, {}, 401, 10),
        ({"X-Postmark-Server-Token": "sandbox-invalid"}, {}, 401, 10),
        ({"Accept": "text/html"}, {}, 415, 0),
        ({}, {"From": "a@b.example", "To": "c@d.example", "Subject": "s"}, 422, 300),
        (
            {},
            {"From": "a@b.example", "To": "c@d.example", "TextBody": "x", "Metadata": {"a" * 21: "v"}},
            422,
            300,
        ),
        ({}, {"From": "a@b.example", "To": "c@d.example", "TextBody": "x", "TrackOpens": "yes"}, 422, 403),
        ({}, {"From": "a@b.example", "To": "c@d.example", "TextBody": "x", "ReplyTo": "nope"}, 422, 300),
        (
            {},
            {"From": "a@b.example", "To": "c@d.example", "TextBody": "x", "Attachments": [{"Name": "a.ics"}]},
            422,
            403,
        ),
        (
            {},
            {
                "From": "a@b.example",
                "To": "c@d.example",
                "TextBody": "x",
                "Attachments": [
                    {"Name": "a.exe", "Content": "TVo=", "ContentType": "application/octet-stream"}
                ],
            },
            422,
            411,
        ),
        (
            {},
            {"From": "a@b.example", "To": ", ".join(f"u{n}@d.example" for n in range(51)), "TextBody": "x"},
            422,
            300,
        ),
    ],
)
def test_requests_postmark_would_refuse(transport, headers, body, status, code):
    client = httpx.Client(transport=transport, base_url=API_BASE)
    base = {"X-Postmark-Server-Token": "t", "Accept": "application/json"}
    response = client.post("/email", json=body, headers={**base, **headers})
    assert response.status_code == status
    assert response.json()["ErrorCode"] == code and response.json()["Message"]


def test_failures_queued_by_tests_answer_in_postmarks_words(provider, postmark_sandbox):
    postmark_sandbox.fail_next(429)
    result = provider.send(outgoing("jane+delivered@example.com", "m1"))
    assert result.outcome == "rate_limited" and result.retry_after == 60.0  # no Retry-After documented
    postmark_sandbox.fail_next(503)
    assert provider.send(outgoing("jane+delivered@example.com", "m2")).outcome == "unavailable"
    postmark_sandbox.accept_then_fail_next()
    assert provider.send(outgoing("jane+delivered@example.com", "m3")).outcome == "unavailable"
    found = provider.find_accepted([SentRef("m3", "jane+delivered@example.com")], request_budget=2)
    assert "m3" in found.found  # taken although the answer was lost


def test_postmark_tracks_what_trackopens_and_tracklinks_ask_for(provider, postmark_sandbox, transport, clock):
    """TrackOpens needs an HTML part for its pixel; TrackLinks rewrites the parts it names. The
    Messages API and the webhooks show the same."""
    client = httpx.Client(transport=transport, base_url=API_BASE)
    headers = {"X-Postmark-Server-Token": "t", "Accept": "application/json"}
    base = {"From": "a@clinic.example", "TextBody": "Receipt: https://example.com/invoices/latest"}
    bodies = {
        "html": {
            **base,
            "To": "a+clicked@example.com",
            "HtmlBody": HTML_WITH_LINK,
            "TrackOpens": True,
            "TrackLinks": "HtmlOnly",
        },
        "no-opens": {
            **base,
            "To": "b+clicked@example.com",
            "HtmlBody": HTML_WITH_LINK,
            "TrackLinks": "HtmlOnly",
        },
        "text-links": {**base, "To": "c+clicked@example.com", "TrackOpens": True, "TrackLinks": "TextOnly"},
    }
    ids = {}
    for name, body in bodies.items():
        answer = client.post("/email", json=body, headers=headers)
        assert answer.status_code == 200, answer.text
        ids[name] = answer.json()["MessageID"]
    clock.advance(60)
    details = {
        name: client.get(f"/messages/outbound/{msg_id}/details", headers=headers).json()
        for name, msg_id in ids.items()
    }
    types = {name: [event["Type"] for event in detail["MessageEvents"]] for name, detail in details.items()}
    assert types["html"] == ["Delivered", "Opened", "LinkClicked"]
    assert types["no-opens"] == ["Delivered", "LinkClicked"]  # TrackOpens left out: the server's, off
    assert types["text-links"] == ["Delivered", "LinkClicked"]  # no HTML part: no pixel
    assert details["html"]["HtmlBody"] == HTML_WITH_LINK
    assert (details["html"]["TrackOpens"], details["html"]["TrackLinks"]) == (True, "HtmlOnly")
    assert (details["text-links"]["TrackOpens"], details["text-links"]["TrackLinks"]) == (False, "TextOnly")
    posts: list[tuple[bytes, dict[str, str]]] = []
    postmark_sandbox.deliver_webhooks(collect(posts))
    clicks = {
        record["Recipient"]: record
        for record in (json.loads(body) for body, _ in posts)
        if record["RecordType"] == "Click"
    }
    assert (
        clicks["a+clicked@example.com"]["ClickLocation"],
        clicks["a+clicked@example.com"]["OriginalLink"],
    ) == (
        "HTML",
        INTAKE_LINK,
    )
    assert (
        clicks["c+clicked@example.com"]["ClickLocation"],
        clicks["c+clicked@example.com"]["OriginalLink"],
    ) == (
        "Text",
        "https://example.com/invoices/latest",
    )
