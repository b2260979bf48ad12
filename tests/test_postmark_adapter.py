"""The Postmark adapter against Postmark's own documented examples (tests/fixtures/postmark/, each
with its source), and the payload shapes of a peer project's Postmark webhook tests."""

from __future__ import annotations

import base64
import dataclasses
import json
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from tests.helpers import HTML_WITH_LINK
from webapp import statuses
from webapp.providers.base import Attachment, OutgoingMessage, PollRef, ProviderError, SentRef
from webapp.providers.http import DEFAULT_RETRY_AFTER
from webapp.providers.postmark import TOKEN_HEADER, PostmarkProvider
from webapp.providers.postmark.sending import FAILED_REQUEST_WAIT, MAX_BATCH, MAX_BATCH_BYTES
from webapp.providers.postmark.translate import parse_time
from webapp.providers.postmark.webhooks import parse_webhook_event

FIXTURES = Path(__file__).parent / "fixtures" / "postmark"
API_BASE = "https://api.postmark.test"


def fixture(name: str) -> dict | list:
    """Return a fixture's wire body (without our _source note)."""
    document = json.loads((FIXTURES / name).read_text())
    if "_body" in document:
        return document["_body"]
    return {key: value for key, value in document.items() if not key.startswith("_")}


def status_of(name: str) -> int:
    return json.loads((FIXTURES / name).read_text()).get("_status", 200)


class FakePostmark:
    """Answers chosen per path; keeps every request."""

    def __init__(self) -> None:
        self.routes: dict[str, httpx.Response | Exception] = {}
        self.requests: list[httpx.Request] = []

    def answer(
        self, path: str, name: str | None = None, *, status: int | None = None, body=None, headers=None
    ):
        content = fixture(name) if name else body
        self.routes[path] = httpx.Response(
            status if status is not None else (status_of(name) if name else 200),
            json=content,
            headers=headers,
        )

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.routes.get(request.url.path)
        if isinstance(answer, Exception):
            raise answer
        if callable(answer):
            return answer(request)
        if answer is None:
            return httpx.Response(404, json={"ErrorCode": 701, "Message": "not found"})
        return answer


@pytest.fixture
def wire() -> FakePostmark:
    return FakePostmark()


@pytest.fixture
def provider(wire):
    provider = PostmarkProvider(
        "server-token",
        API_BASE,
        message_stream="outbound",
        transport=httpx.MockTransport(wire.handler),
        webhook_username="postmark",
        webhook_password="s3cret-password",
    )
    yield provider
    provider.close()


def outgoing(to: str = "jane@example.com", app_id: str = "msg-1") -> OutgoingMessage:
    return OutgoingMessage(
        app_message_id=app_id,
        to_address=to,
        to_name='Jane "JD" Doe',
        from_address="no-reply@clinic.example",
        from_name="Clinic A",
        subject="Reminder",
        body_text="See you tomorrow",
        category="appointment_reminder",
        reply_to="desk@clinic.example",
    )


# Sending


def test_a_send_posts_the_documented_request_and_reads_the_documented_answer(provider, wire):
    wire.answer("/email", "send_response.json")
    result = provider.send(outgoing())
    assert (result.outcome, result.provider_message_id) == (
        "accepted",
        "0a129aee-e1cd-480d-b08d-4f48548ff48d",
    )
    # Acceptance is Postmark's only "processed" signal: at its SubmittedAt, in UTC.
    assert result.accepted_at == datetime(2014, 2, 17, 12, 25, 1, 417864, tzinfo=UTC)
    [request] = wire.requests
    assert request.method == "POST" and request.headers[TOKEN_HEADER] == "server-token"
    assert request.headers["Accept"] == "application/json"
    assert request.headers["Content-Type"] == "application/json"
    body = json.loads(request.content)
    assert body == {
        "From": '"Clinic A" <no-reply@clinic.example>',
        "To": '"Jane \\"JD\\" Doe" <jane@example.com>',
        "Subject": "Reminder",
        "TextBody": "See you tomorrow",
        "Metadata": {"app_message_id": "msg-1"},
        "MessageStream": "outbound",
        # A text-only email: no HTML part for a pixel or a rewritten link, so no tracking asked.
        "TrackOpens": False,
        "TrackLinks": "None",
        "ReplyTo": "desk@clinic.example",
        "Tag": "appointment_reminder",
    }
    assert all(len(key) <= 20 for key in body["Metadata"])  # Postmark's limit on key names


def test_an_html_email_with_an_attachment_goes_in_postmarks_fields(provider, wire):
    wire.answer("/email", "send_response.json")
    ics = b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nEND:VCALENDAR\r\n"
    message = dataclasses.replace(
        outgoing(),
        body_html=HTML_WITH_LINK,
        attachments=(Attachment("appointment.ics", "text/calendar", ics),),
    )
    assert provider.send(message).outcome == "accepted"
    body = json.loads(wire.requests[0].content)
    assert (body["TextBody"], body["HtmlBody"]) == ("See you tomorrow", HTML_WITH_LINK)
    assert (body["TrackOpens"], body["TrackLinks"]) == (True, "HtmlOnly")  # never the text's links
    assert body["Attachments"] == [
        {"Name": "appointment.ics", "Content": base64.b64encode(ics).decode(), "ContentType": "text/calendar"}
    ]
    assert body["ReplyTo"] == "desk@clinic.example"


def test_tracking_turned_off_for_the_server_is_never_asked_for(wire):
    wire.answer("/email", "send_response.json")
    quiet = PostmarkProvider(
        "t", API_BASE, transport=httpx.MockTransport(wire.handler), track_opens=False, track_links=False
    )
    quiet.send(dataclasses.replace(outgoing(), body_html=HTML_WITH_LINK))
    body = json.loads(wire.requests[0].content)
    assert (body["TrackOpens"], body["TrackLinks"]) == (False, "None")


def test_delivery_may_be_delayed_without_an_error_code_is_accepted(provider, wire):
    wire.answer("/email", "send_delayed_response.json")
    result = provider.send(outgoing())
    assert result.outcome == "accepted" and result.provider_message_id


@pytest.mark.parametrize(
    ("suppression", "reason"),
    [
        ("SpamComplaint", "spam_report"),
        ("HardBounce", "bounced_address"),
        ("ManualSuppression", "unsubscribed"),
        (None, "other"),
    ],
)
def test_a_suppressed_recipient_is_rejected_with_the_reason_from_the_suppressions_dump(
    provider, wire, suppression, reason
):
    wire.answer("/email", "error_422_406.json")
    entries = []
    if suppression:
        entries = [
            {
                "EmailAddress": "hbounce@example.com",
                "SuppressionReason": suppression,
                "Origin": "Recipient",
                "CreatedAt": "2019-12-10T08:58:33-05:00",
            }
        ]
    wire.answer("/message-streams/outbound/suppressions/dump", body={"Suppressions": entries})
    result = provider.send(outgoing("hbounce@example.com"))
    assert result.outcome == "rejected" and result.reject_reason == reason
    assert "Found inactive addresses: hbounce@example.com" in result.error  # Postmark's own words
    assert "ErrorCode 406" in result.error
    lookup = wire.requests[1]
    assert lookup.url.params["EmailAddress"] == "hbounce@example.com"


def test_a_failing_suppression_lookup_leaves_the_reason_other(provider, wire):
    wire.answer("/email", "error_422_406.json")
    wire.routes["/message-streams/outbound/suppressions/dump"] = httpx.ConnectTimeout("slow")
    result = provider.send(outgoing("hbounce@example.com"))
    assert (result.outcome, result.reject_reason) == ("rejected", "other")


@pytest.mark.parametrize(
    ("name", "status", "outcome", "reason"),
    [
        ("error_422_300.json", None, "rejected", "invalid_address"),
        ("error_401.json", None, "unauthorized", None),
    ],
)
def test_documented_error_answers(provider, wire, name, status, outcome, reason):
    wire.answer("/email", name, status=status)
    result = provider.send(outgoing())
    assert (result.outcome, result.reject_reason) == (outcome, reason)
    assert fixture(name)["Message"] in result.error


def test_other_422_error_codes_are_rejections_in_other_words(provider, wire):
    wire.answer("/email", status=422, body={"ErrorCode": 411, "Message": "Forbidden attachment type"})
    result = provider.send(outgoing())
    assert (result.outcome, result.reject_reason) == ("rejected", "other")
    assert "Forbidden attachment type" in result.error and "411" in result.error


def test_rate_limits_outages_and_timeouts(provider, wire):
    wire.answer("/email", status=429, body={"ErrorCode": 429, "Message": "Rate Limit Exceeded"})
    result = provider.send(outgoing())
    assert (result.outcome, result.retry_after) == ("rate_limited", DEFAULT_RETRY_AFTER)
    wire.answer("/email", status=429, body={}, headers={"Retry-After": "7"})
    assert provider.send(outgoing()).retry_after == 7.0
    for status in (500, 503):
        wire.answer("/email", status=status, body={"Message": "oops"})
        assert provider.send(outgoing()).outcome == "unavailable"
    wire.routes["/email"] = httpx.ReadTimeout("no answer")
    result = provider.send(outgoing())
    assert result.outcome == "in_doubt" and "ReadTimeout" in result.error
    wire.answer("/email", status=200, body={"Message": "odd"})  # neither ErrorCode nor MessageID
    assert provider.send(outgoing()).outcome == "in_doubt"


def answer_batches_in_turn(wire, items: list) -> None:
    """Answer each /email/batch request with the next results of `items`, one per message."""
    served = []

    def batch(request: httpx.Request) -> httpx.Response:
        count = len(json.loads(request.content))
        served.extend(items[len(served) : len(served) + count])
        return httpx.Response(200, json=served[-count:])

    wire.routes["/email/batch"] = batch


def test_a_batch_is_correlated_by_position_and_a_failed_item_is_rejected(provider, wire):
    answer_batches_in_turn(wire, fixture("batch_response.json"))
    wire.answer(
        "/message-streams/outbound/suppressions/dump",
        body={
            "Suppressions": [
                {
                    "EmailAddress": "receiver2@example.com",
                    "SuppressionReason": "SpamComplaint",
                    "Origin": "Recipient",
                    "CreatedAt": "2019-12-12T08:58:33-05:00",
                }
            ]
        },
    )
    messages = [outgoing(f"receiver{n}@example.com", f"msg-{n}") for n in (1, 2, 3)]
    results = provider.send_batch(messages)
    assert [r.outcome for r in results] == ["accepted", "rejected", "accepted"]
    assert results[0].provider_message_id == "b7bc2f4a-e38e-4336-af7d-e6c392c2f817"
    assert results[2].provider_message_id == "e2ecbbfc-fe12-463d-b933-9fe22915106d"
    assert results[1].reject_reason == "spam_report" and "inactive" in results[1].error
    sent = [json.loads(request.content) for request in wire.requests if request.url.path == "/email/batch"]
    # The first request carries one message: an outage meets one, not 500.
    assert [[m["Metadata"]["app_message_id"] for m in batch] for batch in sent] == [
        ["msg-1"],
        ["msg-2", "msg-3"],
    ]
    assert provider.max_batch == MAX_BATCH == 500


def test_a_batch_answer_that_does_not_match_the_request_leaves_every_message_in_doubt(provider, wire):
    wire.answer("/email/batch", body=fixture("batch_response.json")[:2])
    results = provider.send_batch([outgoing(f"r{n}@example.com", f"m{n}") for n in range(3)])
    # The first request's answer cannot be read: that message is in doubt, the others wait unsent.
    assert [r.outcome for r in results] == ["in_doubt", "not_sent", "not_sent"]
    assert len(wire.requests) == 1 and results[1].retry_after == FAILED_REQUEST_WAIT


@pytest.mark.parametrize(
    ("status", "outcome", "rest"),
    [
        (500, "unavailable", "not_sent"),
        (503, "unavailable", "not_sent"),
        (429, "rate_limited", "rate_limited"),
        (401, "unauthorized", "unauthorized"),
    ],
)
def test_a_failing_first_request_puts_one_message_at_risk_and_sends_no_other(
    provider, wire, status, outcome, rest
):
    wire.answer("/email/batch", status=status, body={"ErrorCode": 0, "Message": "Internal server error."})
    results = provider.send_batch([outgoing(f"r{n}@example.com", f"m{n}") for n in range(MAX_BATCH)])
    assert len(wire.requests) == 1 and len(json.loads(wire.requests[0].content)) == 1
    assert results[0].outcome == outcome
    assert {result.outcome for result in results[1:]} == {rest} and len(results) == MAX_BATCH
    assert all(result.error.startswith("not sent: ") for result in results[1:])


def test_after_a_timeout_no_further_request_is_made(provider, wire):
    wire.routes["/email/batch"] = httpx.ReadTimeout("timed out")
    results = provider.send_batch([outgoing(f"r{n}@example.com", f"m{n}") for n in range(3)])
    assert [r.outcome for r in results] == ["in_doubt", "not_sent", "not_sent"]
    assert len(wire.requests) == 1


def test_a_refused_batch_applies_to_each_message_and_big_batches_are_split(provider, wire):
    wire.answer("/email/batch", "error_401.json")
    results = provider.send_batch([outgoing(f"r{n}@example.com", f"m{n}") for n in range(2)])
    assert [r.outcome for r in results] == ["unauthorized"] * 2
    ok = {
        "ErrorCode": 0,
        "Message": "OK",
        "MessageID": "x",
        "To": "a@b",
        "SubmittedAt": "2020-01-01T00:00:00Z",
    }
    calls = []

    def batch(request: httpx.Request) -> httpx.Response:
        calls.append(len(json.loads(request.content)))
        return httpx.Response(200, json=[ok] * calls[-1])

    splitting = PostmarkProvider("t", API_BASE, transport=httpx.MockTransport(batch))
    results = splitting.send_batch([outgoing(f"r{n}@example.com", f"m{n}") for n in range(MAX_BATCH + 3)])
    assert calls == [1, MAX_BATCH, 2] and len(results) == MAX_BATCH + 3
    assert {result.outcome for result in results} == {"accepted"}


def test_a_batch_keeps_within_postmarks_50_mb_and_a_message_over_10_mb_goes_alone_refused():
    """Each message is checked against 10 MB, each request against 50 MB and 500 messages: one
    oversized message is refused by itself instead of having its whole request refused (413)."""
    sizes: list[tuple[int, int]] = []  # (messages, bytes) per request

    def batch(request: httpx.Request) -> httpx.Response:
        items = json.loads(request.content)
        sizes.append((len(items), len(request.content)))
        ok = {
            "ErrorCode": 0,
            "Message": "OK",
            "MessageID": "x",
            "To": "a@b",
            "SubmittedAt": "2020-01-01T00:00:00Z",
        }
        return httpx.Response(200, json=[ok] * len(items))

    seven_mb = Attachment("scan.pdf", "application/pdf", b"\x00" * 7_000_000)  # 9.3 MB in base64
    big = [
        dataclasses.replace(outgoing(f"r{n}@example.com", f"m{n}"), attachments=(seven_mb,)) for n in range(8)
    ]
    too_big = dataclasses.replace(
        outgoing("huge@example.com", "huge"),
        attachments=(Attachment("scan.pdf", "application/pdf", b"\x00" * 7_600_000),),  # 10.1 MB
    )
    provider = PostmarkProvider("t", API_BASE, transport=httpx.MockTransport(batch))

    results = provider.send_batch([big[0], too_big, *big[1:]])

    assert [count for count, _ in sizes] == [1, 5, 2]  # the first alone, then as many as 50 MB holds
    assert all(size <= MAX_BATCH_BYTES for _, size in sizes)
    assert sum(count for count, _ in sizes) == 8
    assert [result.outcome for result in results] == ["accepted", "rejected", *["accepted"] * 7]
    assert results[1].reject_reason == "other" and "too large for Postmark" in (results[1].error or "")
    sizes.clear()
    alone = provider.send(too_big)
    assert alone.outcome == "rejected" and sizes == []  # refused without a request


# Messages API


def test_poll_reads_message_details_into_our_events(provider, wire):
    message_id = "07311c54-0687-4ab9-b034-b54b5bad88ba"
    wire.answer(f"/messages/outbound/{message_id}/details", "messages_outbound_details.json")
    result = provider.poll([PollRef("msg-1", message_id), PollRef("msg-2", "")], request_budget=5)
    assert result.requests_made == 1 and result.covered == frozenset({"msg-1"})
    events = result.events["msg-1"]
    kinds = [event.kind for event in events]
    assert kinds == ["processed", "delivered", "deferred", "open", "click"]
    assert {event.app_message_id for event in events} == {"msg-1"}
    processed, delivered, deferred, _, click = events
    assert processed.occurred_at == datetime(2014, 2, 14, 16, 12, 54, 720914, tzinfo=UTC)
    assert delivered.reason.startswith("smtp;250 2.0.0 OK")
    assert deferred.reason == "smtp;421 4.7.0 Try again later"
    assert click.url == "https://example.com/parts"
    assert statuses.current_status(kinds) == statuses.CLICKED
    assert wire.requests[0].headers[TOKEN_HEADER] == "server-token"


def test_poll_stops_on_the_budget_and_on_a_rate_limit(provider, wire):
    refs = [PollRef(f"m{n}", f"pm-{n}") for n in range(3)]
    for n in range(3):
        wire.answer(f"/messages/outbound/pm-{n}/details", "messages_outbound_details.json")
    assert provider.poll(refs, request_budget=2).requests_made == 2
    wire.answer("/messages/outbound/pm-0/details", status=429, body={"Message": "Rate Limit Exceeded"})
    result = provider.poll(refs, request_budget=5)
    assert result.rate_limited_for == DEFAULT_RETRY_AFTER and result.covered == frozenset()
    wire.answer(
        "/messages/outbound/pm-0/details", status=422, body={"ErrorCode": 701, "Message": "not found"}
    )
    assert provider.poll(refs, request_budget=5).covered == frozenset({"m1", "m2"})


def test_find_accepted_searches_by_our_id_in_metadata(provider, wire):
    search = fixture("messages_outbound_search.json")
    search["Messages"][0]["Metadata"] = {"app_message_id": "msg-1"}
    wire.answer("/messages/outbound", body=search)
    answer = provider.find_accepted([SentRef("msg-1", "john.doe@yahoo.com")], request_budget=3)
    assert answer.found == {"msg-1": "0ac29aee-e1cd-480d-b08d-4f48548ff48d"}
    assert answer.checked == frozenset({"msg-1"}) and answer.requests_made == 1
    params = wire.requests[0].url.params
    assert params["metadata_app_message_id"] == "msg-1" and params["count"] and params["offset"] == "0"
    wire.answer("/messages/outbound", body={"TotalCount": 0, "Messages": []})
    answer = provider.find_accepted([SentRef("msg-2", "x@example.com"), SentRef("msg-3", "y@example.com")], 1)
    assert answer.found == {} and answer.checked == frozenset({"msg-2"})  # msg-3 not asked yet


# Suppressions


def test_spam_reports_come_from_the_suppressions_dump(provider, wire):
    wire.answer("/message-streams/outbound/suppressions/dump", "suppressions_dump.json")
    reports = provider.spam_reports()
    # The dump filtered on SpamComplaint; a stray other reason is still left out.
    assert reports == [("spam.complaint.address@wildbit.com", datetime(2019, 12, 12, 13, 58, 33, tzinfo=UTC))]
    assert wire.requests[0].url.params["SuppressionReason"] == "SpamComplaint"


def test_a_spam_complaint_lift_refused_by_postmark_needs_a_request_to_its_support(provider, wire):
    wire.answer("/message-streams/outbound/suppressions/delete", "suppressions_delete.json")
    lifted = provider.remove_spam_report("good.address@wildbit.com")
    assert lifted.outcome == "lifted"
    assert json.loads(wire.requests[0].content) == {
        "Suppressions": [{"EmailAddress": "good.address@wildbit.com"}]
    }
    refused = provider.remove_spam_report("spammy.address@wildbit.com")
    assert refused.outcome == "provider_request_needed"
    assert "You do not have the required authority to change this suppression." in refused.detail
    assert "Postmark support" in refused.detail and "spammy.address@wildbit.com" in refused.detail
    with pytest.raises(ProviderError):
        provider.remove_spam_report("absent@example.com")  # the answer does not mention it
    wire.answer("/message-streams/outbound/suppressions/delete", status=500, body={})
    with pytest.raises(ProviderError):
        provider.remove_spam_report("good.address@wildbit.com")


# Webhooks


def basic(username: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()}


def test_webhooks_are_verified_by_their_basic_credentials(provider):
    body = json.dumps(fixture("webhook_delivery.json")).encode()
    verdict = provider.verify_webhook(basic("postmark", "s3cret-password"), body, now=0)
    # The same body posted again within a day is a replay (Postmark retries for hours).
    assert verdict.authentic and verdict.replay_key and verdict.replay_ttl >= 12 * 3600
    again = provider.verify_webhook(basic("postmark", "s3cret-password"), body, now=3600)
    assert again.replay_key == verdict.replay_key
    other = provider.verify_webhook(basic("postmark", "s3cret-password"), body + b" ", now=0)
    assert other.replay_key != verdict.replay_key
    for headers in (
        basic("postmark", "wrong"),
        basic("someone", "s3cret-password"),
        {"Authorization": "Bearer s3cret-password"},
        {"Authorization": "Basic !!!"},
        {},
    ):
        assert not provider.verify_webhook(headers, body, now=0).authentic
    unset = PostmarkProvider("t", API_BASE, transport=httpx.MockTransport(lambda r: httpx.Response(200)))
    assert not unset.verify_webhook(basic("", ""), body, now=0).authentic  # never open by default


@pytest.mark.parametrize(
    ("name", "kind", "status"),
    [
        ("webhook_delivery.json", "delivered", statuses.DELIVERED),
        ("webhook_bounce.json", "bounce", statuses.FAILED),
        ("webhook_bounce_transient.json", "deferred", statuses.DEFERRED),
        ("webhook_spam_complaint.json", "spamreport", statuses.SPAM_REPORT),
        ("webhook_open.json", "open", statuses.OPEN),
        ("webhook_click.json", "click", statuses.CLICKED),
        ("webhook_subscription_change.json", "unknown", None),
    ],
)
def test_each_documented_webhook_record_becomes_our_event(provider, name, kind, status):
    payload = fixture(name)
    payload["Metadata"] = {**payload.get("Metadata", {}), "app_message_id": "msg-7"}
    [event] = provider.parse_webhook(json.dumps(payload).encode())
    assert event.kind == kind and statuses.status_for_event(kind) == status
    assert event.app_message_id == "msg-7" and event.provider_message_id == payload["MessageID"]
    assert event.occurred_at.tzinfo is not None
    assert event.raw == payload


def test_webhook_details_are_kept_in_our_words_and_postmarks():
    bounce = fixture("webhook_bounce.json")
    [event] = parse_webhook_event(json.dumps(bounce).encode())
    # The server's words as the reason, without Postmark's Type name ("HardBounce") tacked on.
    assert event.reject_reason == "bounced_address" and event.reason == "Test bounce details"
    assert event.recipient == "john@example.com"
    [spam] = parse_webhook_event(json.dumps(fixture("webhook_spam_complaint.json")).encode())
    assert spam.reject_reason == "spam_report"
    [click] = parse_webhook_event(json.dumps(fixture("webhook_click.json")).encode())
    assert click.url == "https://example.com"
    [opened] = parse_webhook_event(json.dumps(fixture("webhook_open.json")).encode())
    assert "WebMail" in opened.reason and "first open" in opened.reason


@pytest.mark.parametrize(
    ("bounce_type", "kind", "reason"),
    [
        ("DnsError", "deferred", None),
        ("SoftBounce", "bounce", "other"),
        ("BadEmailAddress", "bounce", "invalid_address"),
        # Delivered, then filed as spam by the receiver: neither a failure nor the client's report.
        ("SpamNotification", "spam_filtered", None),
        ("Blocked", "bounce", "other"),
        ("SomethingNew", "bounce", "other"),
        ("AutoResponder", "unknown", None),
        ("SpamComplaint", "spamreport", "spam_report"),
    ],
)
def test_bounce_types_route_on_type_never_on_typecode(bounce_type, kind, reason):
    payload = {**fixture("webhook_bounce.json"), "Type": bounce_type, "TypeCode": 1}
    [event] = parse_webhook_event(json.dumps(payload).encode())
    assert (event.kind, event.reject_reason) == (kind, reason)


def test_the_peer_projects_webhook_payload_shapes_replay_through_parse_webhook():
    shapes = json.loads((FIXTURES / "anymail_webhook_shapes.json").read_text())
    for case in shapes["cases"]:
        events = parse_webhook_event(json.dumps(case["payload"]).encode())
        if case["expect"] is None:
            assert events == [], case["name"]
            continue
        [event] = events
        for field, wanted in case["expect"].items():
            got = event.occurred_at.isoformat() if field == "occurred_at" else getattr(event, field)
            assert got == wanted, (case["name"], field)
    for case in shapes["malformed"]:
        with pytest.raises(ValueError):
            parse_webhook_event(json.dumps(case["payload"]).encode())


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[]",
        b'[{"RecordType": "Delivery"}]',
        b'"text"',
        b'{"RecordType": "Delivery", "DeliveredAt": "yesterday"}',
        b'{"RecordType": "Delivery"}',
        b'{"RecordType": 5}',
        b'{"RecordType": "Bounce", "Type": "HardBounce", "BouncedAt": "2019-13-45T00:00:00Z"}',
        b'{"RecordType": "Open", "ReceivedAt": "2019-11-05T16:33:54.9070259+25:00"}',
        b'{"RecordType": "Delivery", "x": ' + b"[" * 50 + b"]" * 50 + b"}",
        b"[" * 100_000 + b"]" * 100_000,
        b'{"RecordType": "Delivery", "Details": "' + b"x" * (1024 * 1024) + b'"}',
    ],
)
def test_malformed_webhook_bodies_raise_value_error(body):
    with pytest.raises(ValueError):
        parse_webhook_event(body)


def test_an_ownerless_subscription_change_is_ignored_safely():
    manual = {
        "RecordType": "SubscriptionChange",
        "MessageID": None,
        "ChangedAt": "2020-02-01T10:53:34.416071Z",
        "Recipient": "someone@example.com",
        "Origin": "Customer",
        "SuppressSending": True,
        "SuppressionReason": "ManualSuppression",
    }
    assert parse_webhook_event(json.dumps(manual).encode()) == []


@pytest.mark.parametrize(
    ("text", "wanted"),
    [
        ("2016-03-12T15:27:50.4468803-05:00", datetime(2016, 3, 12, 20, 27, 50, 446880, tzinfo=UTC)),
        ("2024-08-05T02:03:37.0951168Z", datetime(2024, 8, 5, 2, 3, 37, 95116, tzinfo=UTC)),
        ("2019-12-10T08:58:33-05:00", datetime(2019, 12, 10, 13, 58, 33, tzinfo=UTC)),
        ("2022-06-05T17:17:32Z", datetime(2022, 6, 5, 17, 17, 32, tzinfo=UTC)),
        ("2022-06-05T17:17:32", datetime(2022, 6, 5, 17, 17, 32, tzinfo=UTC)),
        ("2022-06-05T17:17:32.5+0130", datetime(2022, 6, 5, 15, 47, 32, 500000, tzinfo=UTC)),
    ],
)
def test_times_are_read_tolerantly_as_utc(text, wanted):
    assert parse_time(text) == wanted


@pytest.mark.parametrize(
    "text",
    [
        None,
        5,
        "",
        "soon",
        "2022-06-05",
        "2022-06-05T17:17:32Zjunk",
        "9" * 100,
        "9999-12-31T23:59:59-05:00",
        "0001-01-01T00:00:00+05:00",
        "2022-02-30T00:00:00Z",
    ],
)
def test_unreadable_times_raise_value_error(text):
    with pytest.raises(ValueError):
        parse_time(text)


@pytest.mark.parametrize(
    ("record", "kind"),
    [
        ({"Type": "SpamComplaint", "BouncedAt": "2014-02-14T11:30:00.1234567-05:00"}, "spamreport"),
        ({"Type": "HardBounce", "BouncedAt": "2014-02-14T11:30:00Z", "Details": "smtp;550 5.1.1"}, "bounce"),
        ({"Type": "SpamNotification", "BouncedAt": "2014-02-14T11:30:00Z"}, "spam_filtered"),
        ({"Type": "SpamComplaint"}, "bounce"),  # no readable BouncedAt: it stays a bounce
    ],
)
def test_poll_reads_a_bounces_type_from_its_bounce_record(provider, wire, record, kind):
    detail = fixture("messages_outbound_details.json")
    detail["MessageEvents"] = [
        {
            "Recipient": "john.doe@yahoo.com",
            "Type": "Bounced",
            "ReceivedAt": "2014-02-14T11:30:00.1234567-05:00",
            "Details": {"Summary": "Bounced", "BounceID": "374814878"},
        }
    ]
    wire.answer("/messages/outbound/pm-1/details", body=detail)
    wire.answer("/bounces/374814878", body={"ID": 374814878, "MessageID": "pm-1", **record})
    result = provider.poll([PollRef("msg-1", "pm-1")], request_budget=5)
    assert [event.kind for event in result.events["msg-1"]] == ["processed", kind]
    assert result.requests_made == 2
    polled = result.events["msg-1"][1]
    assert polled.occurred_at == datetime(2014, 2, 14, 16, 30, 0, 123456, tzinfo=UTC)


@pytest.mark.parametrize(
    ("budget", "bounce_answer", "kinds", "covered"),
    [
        # The budget ran out before the bounce record: the Bounced event waits, the email keeps its turn.
        (1, None, ["processed"], False),
        (
            5,
            httpx.Response(500, json={"ErrorCode": 0, "Message": "Internal server error."}),
            ["processed"],
            False,
        ),
        # Postmark has no such bounce record: it stays a bounce.
        (
            5,
            httpx.Response(422, json={"ErrorCode": 407, "Message": "This bounce was not found."}),
            None,
            True,
        ),
    ],
)
def test_a_bounce_of_unknown_type_is_not_taken_for_a_failure(
    provider, wire, budget, bounce_answer, kinds, covered
):
    """A "Bounced" MessageEvent may be a SpamNotification (delivered, then filed as spam): without its
    bounce record's Type it is not stored as a failure that would stick."""
    detail = fixture("messages_outbound_details.json")
    detail["MessageEvents"] = [
        {
            "Recipient": "john.doe@yahoo.com",
            "Type": "Bounced",
            "ReceivedAt": "2014-02-14T11:30:00.1234567-05:00",
            "Details": {"Summary": "Bounced", "BounceID": "374814878"},
        }
    ]
    wire.answer("/messages/outbound/pm-1/details", body=detail)
    if bounce_answer is not None:
        wire.routes["/bounces/374814878"] = bounce_answer
    result = provider.poll([PollRef("msg-1", "pm-1")], request_budget=budget)
    assert [event.kind for event in result.events["msg-1"]] == (kinds or ["processed", "bounce"])
    assert ("msg-1" in result.covered) is covered
