"""Client mail to support as the tests make it: raw messages byte for byte, DKIM keys and their
DNS records, signatures, and the Inbound Parse post. The `keys` fixture (conftest.py) holds a key
per test domain."""

from __future__ import annotations

import base64
import types
from dataclasses import dataclass, field
from datetime import timedelta
from email.utils import format_datetime, make_msgid

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from webapp.models import utcnow
from webapp.sandbox.client_mail import inbound_post

INBOUND = "/webhooks/sendgrid/inbound"


SUPPORT = "support@clinicmail.example"


ON_FILE = "jane@clinic.example"


SIGNED_HEADERS = [b"from", b"to", b"subject", b"date", b"message-id"]


# A look-alike of clinic.example ("clinіc", Cyrillic і), as its owner would register it.
HOMOGLYPH_DOMAIN = "xn--clnc-ozd.example"


# A 768-bit RSA key (RFC 8301 forbids keys under 1024 bits; cryptography will not make one).
WEAK_KEY = b"""\
-----BEGIN RSA PRIVATE KEY-----
MIIBywIBAAJhAKu/RzYXS5Brs+HzfZ7S2hywoDURorJ8j8K5bS5en1ou09E147S1
X42IZxHU3wnKJdWI7wCrdA33FvABgG24fk0qWKqnhJk36GZ6m38Q2C20OVBxiNLU
u50Q7RtTCjBO/QIDAQABAmBE6LcyvcAEzyHae66gZes7baaqBExqHs4zi+CBpVd8
gKNeIqgdHlSbXeo03lsq+17wKC1iR9Mqgej1O4wpcCJaA7jJzril2XgmMVYgHmwt
fj/E94WC0F9wa130PAPSdKUCMQDfWBqzlwB6QSu4hOIybBJGp8YFiuubsdjWrPg7
ZWcJjiV3BRRFdzLeaBSko9yGSV8CMQDE297SJ69SWqvf/LnpDGvtN0xjFspsMCmt
F96KX+tYLA/7bXaQcWb5QrRtC9eWGSMCMQDbXttjOFcUvbxm0canRfUxhwr+WLQQ
yj+0pFJxbKkm/oKYA9okXO8O+uYDzJsHHzsCMHBXaVlU/GBrDhrNButQA2dkX1tM
7ke/VIlLTdx50LyIqLY7SaY0kSc+QejZETa/MQIxANUpWqz3dWl5u/tIKAZw0xEQ
k5TtC5lbOjSd60zwQroVD0kSImxN/e8gV9koH8b+PQ==
-----END RSA PRIVATE KEY-----
"""


def _public_record(private: rsa.RSAPrivateKey) -> bytes:
    der = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)


def _key() -> tuple[bytes, bytes]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    der = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem, b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)


@dataclass
class Keys:
    """Signing keys by domain, the DNS that publishes their public halves, and what it was asked."""

    private: dict[str, bytes] = field(default_factory=dict)
    records: dict[bytes, bytes] = field(default_factory=dict)
    lookups: list[bytes] = field(default_factory=list)

    def add(self, domain: str, selector: str = "sel", pem: bytes | None = None) -> None:
        if pem is None:
            pem, txt = _key()
        else:
            txt = _public_record(serialization.load_pem_private_key(pem, password=None))
        self.private[f"{selector}:{domain}" if selector != "sel" else domain] = pem
        self.records[f"{selector}._domainkey.{domain}.".encode()] = txt

    def dns(self, name: bytes, timeout: float = 5) -> bytes | None:
        self.lookups.append(name)
        return self.records.get(name)


DOMAINS = (
    "clinic.example",
    "mail.clinic.example",
    "evil.example",
    "lists.example",
    HOMOGLYPH_DOMAIN,
    "example",
    "co.uk",
    "clinic.co.uk",
)


def mail(
    from_header: str | list[str] = f"Jane Doe <{ON_FILE}>",
    *,
    to: str | list[str] = SUPPORT,
    subject: str = "Please take me off the spam list",
    body: str = "Hello,\r\nI reported your reminder as spam by mistake. Please remove me.\r\nJane\r\n",
    date: object = "now",
    extra: list[str] | None = None,
    content_type: str = "text/plain; charset=utf-8",
    encoding: str = "utf-8",
) -> bytes:
    """Build a raw mail, byte for byte, so tests control every header."""
    froms = from_header if isinstance(from_header, list) else [from_header]
    tos = to if isinstance(to, list) else [to]
    lines = [f"From: {value}" for value in froms]
    lines += [f"To: {value}" for value in tos]
    lines.append(f"Subject: {subject}")
    if date == "now":
        date = utcnow() - timedelta(minutes=2)
    if date is not None:
        lines.append(f"Date: {format_datetime(date)}")
    lines += [f"Message-ID: {make_msgid(domain='clinic.example')}", "MIME-Version: 1.0"]
    lines.append(f"Content-Type: {content_type}")
    lines += extra or []
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body.encode(encoding)


def sign(
    keys: Keys,
    raw: bytes,
    domain: str = "clinic.example",
    key_of: str | None = None,
    *,
    headers: list[bytes] | None = None,
    length: bool = False,
    algorithm: bytes = b"rsa-sha256",
    at: float | None = None,
    selector: str = "sel",
) -> bytes:
    """Prepend a DKIM signature for `domain`, made with the key of `key_of` (default: its own)."""
    clock = dkim.time
    if at is not None:  # dkimpy stamps t= from time.time(): sign "in the past"
        dkim.time = types.SimpleNamespace(time=lambda: at)
    try:
        header = dkim.sign(
            raw,
            selector.encode(),
            domain.encode(),
            keys.private[key_of or (domain if selector == "sel" else f"{selector}:{domain}")],
            include_headers=headers or SIGNED_HEADERS,
            length=length,
            signature_algorithm=algorithm,
        )
    finally:
        dkim.time = clock
    return header + raw


def post(client, raw: bytes, dkim_field: str = "none", **fields: str):
    """Post a mail the way Inbound Parse does with "POST the raw, full MIME message"."""
    body, content_type = inbound_post(
        raw,
        dkim=dkim_field,
        SPF="pass",
        to=SUPPORT,
        **{"from": "whatever the mail claims"},
        **fields,
    )
    return client.post(INBOUND, data=body, content_type=content_type)
