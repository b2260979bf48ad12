"""The signed event webhook: ECDSA verification, and the sandbox's batches against polling."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from webapp.providers.base import OutgoingMessage, PollRef
from webapp.providers.sendgrid import SendGridProvider
from webapp.providers.sendgrid.webhooks import parse_webhook_events, verify_signature

NOW = 1_767_348_000
TOLERANCE = 600
BODY = b'[{"email":"jane@example.com","event":"delivered","timestamp":1767347990,"app_message_id":"m1"}]\r\n'

# SendGrid's own known-answer vector, from sendgrid-python's test/unit/test_eventwebhook.py (MIT).
SENDGRID_PUBLIC_KEY = (
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE83T4O/n84iotIvIW4mdBgQ/7dAfSmpqIM8kF9mN1flpVKS3G"
    "Rqe62gw+2fNNRaINXvVpiglSI8eNEc6wEA3F+g=="
)
SENDGRID_SIGNATURE = (
    "MEUCIGHQVtGj+Y3LkG9fLcxf3qfI10QysgDWmMOVmxG0u6ZUAiEAyBiXDWzM+uOe5W0JuG+luQAbPIqHh89M15TluLtEZtM="
)
SENDGRID_TIMESTAMP = "1600112502"
SENDGRID_EVENT = {
    "email": "hello@world.com",
    "event": "dropped",
    "reason": "Bounced Address",
    "sg_event_id": "ZHJvcC0xMDk5NDkxOS1MUnpYbF9OSFN0T0doUTRrb2ZTbV9BLTA",
    "sg_message_id": "LRzXl_NHStOGhQ4kofSm_A.filterdrecv-p3mdw1-756b745b58-kmzbl-18-5F5FC76C-9.0",
    "smtp-id": "<LRzXl_NHStOGhQ4kofSm_A@ismtpd0039p1iad1.sendgrid.net>",
    "timestamp": 1600112492,
}


def public_b64(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> str:
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


def sign(key: ec.EllipticCurvePrivateKey, timestamp: str, body: bytes) -> str:
    return base64.b64encode(key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))).decode()


@pytest.fixture(scope="module")
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def check(
    public_key: str, signature: str | None, timestamp: str | None, body: bytes, now: float = NOW
) -> bool:
    return verify_signature(public_key, signature, timestamp, body, tolerance_seconds=TOLERANCE, now=now)


def test_a_valid_signature_verifies(key):
    assert check(public_b64(key), sign(key, str(NOW), BODY), str(NOW), BODY) is True


def test_sendgrids_own_test_vector_verifies():
    body = (json.dumps([SENDGRID_EVENT], sort_keys=True, separators=(",", ":")) + "\r\n").encode()
    now = int(SENDGRID_TIMESTAMP)

    assert check(SENDGRID_PUBLIC_KEY, SENDGRID_SIGNATURE, SENDGRID_TIMESTAMP, body, now) is True
    assert (
        check(SENDGRID_PUBLIC_KEY, SENDGRID_SIGNATURE, SENDGRID_TIMESTAMP, body.rstrip(b"\r\n"), now) is False
    )


def test_a_tampered_body_fails(key):
    signature = sign(key, str(NOW), BODY)

    assert check(public_b64(key), signature, str(NOW), BODY.replace(b"delivered", b"bounce")) is False


def test_a_reserialised_body_fails(key):
    signature = sign(key, str(NOW), BODY)
    reserialised = (json.dumps(json.loads(BODY)) + "\r\n").encode()

    assert check(public_b64(key), signature, str(NOW), reserialised) is False


def test_the_trailing_crlf_is_part_of_what_was_signed(key):
    signature = sign(key, str(NOW), BODY)

    assert check(public_b64(key), signature, str(NOW), BODY.rstrip(b"\r\n")) is False


def test_the_wrong_key_fails(key):
    other = ec.generate_private_key(ec.SECP256R1())

    assert check(public_b64(other), sign(key, str(NOW), BODY), str(NOW), BODY) is False


def test_a_different_timestamp_than_the_signed_one_fails(key):
    signature = sign(key, str(NOW), BODY)

    assert check(public_b64(key), signature, str(NOW + 1), BODY) is False


@pytest.mark.parametrize(("offset", "valid"), [(0, True), (TOLERANCE, True), (-TOLERANCE, True)])
def test_timestamps_within_the_tolerance_pass(key, offset, valid):
    timestamp = str(NOW + offset)

    assert check(public_b64(key), sign(key, timestamp, BODY), timestamp, BODY) is valid


@pytest.mark.parametrize("offset", [-(TOLERANCE + 1), TOLERANCE + 1, -86_400, 86_400])
def test_stale_or_future_timestamps_fail(key, offset):
    timestamp = str(NOW + offset)

    assert check(public_b64(key), sign(key, timestamp, BODY), timestamp, BODY) is False


@pytest.mark.parametrize("timestamp", ["", None, "17673480.5", "abc", " 1767348000", "-1767348000", "1e9"])
def test_missing_or_non_integer_timestamps_fail(key, timestamp):
    signature = sign(key, timestamp or "", BODY)

    assert check(public_b64(key), signature, timestamp, BODY) is False


@pytest.mark.parametrize("signature", [None, "", "not base64!", "MEUCIQ", base64.b64encode(b"junk").decode()])
def test_missing_or_garbled_signatures_fail(key, signature):
    assert check(public_b64(key), signature, str(NOW), BODY) is False


def test_bad_keys_fail_without_raising(key):
    signature = sign(key, str(NOW), BODY)
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    p384_key = ec.generate_private_key(ec.SECP384R1())

    for public_key in ("", "%%%not-base64%%%", base64.b64encode(b"not DER").decode(), public_b64(rsa_key)):
        assert check(public_key, signature, str(NOW), BODY) is False
    assert check(public_b64(p384_key), sign(p384_key, str(NOW), BODY), str(NOW), BODY) is False


@settings(max_examples=150, deadline=None)
@given(
    public_key=st.text(),
    signature=st.none() | st.text(),
    timestamp=st.none() | st.text() | st.integers(0, 10**12).map(str),
    body=st.binary(),
)
def test_verification_never_raises(public_key, signature, timestamp, body):
    assert verify_signature(public_key, signature, timestamp, body, tolerance_seconds=TOLERANCE) is False


def test_the_key_may_be_given_with_surrounding_whitespace(key):
    assert check(f"  {public_b64(key)}\n", sign(key, str(NOW), BODY), str(NOW), BODY) is True


# The sandbox's signed batches against polling the same messages


@pytest.fixture
def provider(sandbox, clock):
    provider = SendGridProvider(
        "SG.k", "http://sandbox.test", transport=httpx.WSGITransport(app=sandbox), clock=clock
    )
    yield provider
    provider.close()


def outgoing(to: str, app_id: str) -> OutgoingMessage:
    return OutgoingMessage(app_id, to, "", "clinic@example.com", "Clinic", "Reminder", "Hello", "reminder")


def collect(batches: list[tuple[bytes, dict[str, str]]]) -> Callable[[bytes, dict[str, str]], int]:
    """A stand-in for the app's webhook route, keeping what it is posted."""

    def post(body: bytes, headers: dict[str, str]) -> int:
        batches.append((body, headers))
        return 200

    return post


def test_sandbox_batches_verify_with_its_public_key(sandbox, provider, clock):
    provider.send(outgoing("delivered@example.com", "m1"))
    clock.now += 60
    batches: list[tuple[bytes, dict[str, str]]] = []

    assert sandbox.deliver_webhooks(collect(batches)) == 2

    ((body, headers),) = batches
    signature = headers["X-Twilio-Email-Event-Webhook-Signature"]
    timestamp = headers["X-Twilio-Email-Event-Webhook-Timestamp"]
    assert timestamp == str(int(clock.now))
    assert check(sandbox.public_key_b64, signature, timestamp, body, now=clock.now) is True
    assert check(sandbox.public_key_b64, signature, timestamp, body.rstrip(b"\r\n"), now=clock.now) is False
    assert sandbox.public_key_b64.startswith("MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE")


@pytest.mark.parametrize(
    "scenario", ["deferred", "clicked", "bounced", "dropped", "machine-open", "spam", "jane"]
)
def test_webhook_and_polling_give_the_same_events(sandbox, provider, clock, scenario):
    refs = []
    for i in range(3):
        app_id = f"{scenario}-{i}"
        result = provider.send(outgoing(f"client{i}+{scenario}@example.com", app_id))
        refs.append(PollRef(app_id, result.provider_message_id or ""))
    clock.now += 120
    batches: list[tuple[bytes, dict[str, str]]] = []
    sandbox.deliver_webhooks(collect(batches))

    pushed = [event for body, _ in batches for event in parse_webhook_events(body)]
    pulled = [event for events in provider.poll(refs, request_budget=10).events.values() for event in events]

    assert pushed and len(pushed) == len(pulled)
    assert sorted(event.dedupe_key for event in pushed) == sorted(event.dedupe_key for event in pulled)
    assert len({event.dedupe_key for event in pushed}) == len(pushed)
    assert {(event.app_message_id, event.kind, event.attempt, event.url) for event in pushed} == {
        (event.app_message_id, event.kind, event.attempt, event.url) for event in pulled
    }
